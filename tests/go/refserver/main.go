// Reference HTTP/1.x server for the decoy's differential transport tests: Go's standard library only.
// It prints its listening address on the first stdout line and serves an echo handler whose answers
// depend on the request exactly as tests/support/goecho.py's ASGI app does.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(echo)}
	_ = srv.Serve(ln)
}

func describe(r *http.Request, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q %q %s\n", r.Method, r.URL.Path, r.URL.RawQuery, r.Proto)
	fmt.Fprintf(&b, "host=%q cl=%d\n", r.Host, r.ContentLength)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, r.Header[k])
	}
	b.WriteString(body)
	return b.String()
}

// decodeFirst answers how encoding/json's Decoder reads the body: "ok N" (N bytes were the first value)
// or "err TEXT" — what gin's ShouldBindJSON hands Ollama's handlers.
func decodeFirst(w http.ResponseWriter, r *http.Request) {
	var v json.RawMessage
	dec := json.NewDecoder(r.Body)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := dec.Decode(&v); err != nil {
		fmt.Fprintf(w, "err %s", err.Error())
		return
	}
	fmt.Fprintf(w, "ok %d", dec.InputOffset())
}

func echo(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/json" {
		decodeFirst(w, r)
		return
	}
	if path == "/b64" { // how encoding/json decodes a []byte field (Ollama's images)
		data, _ := io.ReadAll(r.Body)
		buf := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, err := base64.StdEncoding.Decode(buf, data); err != nil {
			fmt.Fprintf(w, "err %s", err.Error())
			return
		}
		fmt.Fprint(w, "ok")
		return
	}
	body := ""
	if path != "/noread" {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			body = "body error: " + err.Error() + "\n"
		} else {
			body = fmt.Sprintf("body %d %q\n", len(data), string(data))
		}
	}
	text := describe(r, body)
	switch {
	case path == "/stream":
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "{\"n\":%d}\n", i)
			w.(http.Flusher).Flush()
		}
	case path == "/big":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write([]byte(text + strings.Repeat("x", 3000)))
	case path == "/two":
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(strings.Repeat("a", 1500)))
		w.Write([]byte(strings.Repeat("b", 1000)))
	case path == "/exact":
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(strings.Repeat("e", 2048)))
	case path == "/empty":
	case path == "/sniff":
		w.Write([]byte("<html><body>" + text + "</body></html>"))
	case path == "/declared":
		w.Header().Set("Content-Length", strconv.Itoa(len(text)))
		w.Header().Set("X-Zeta", "z")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Write([]byte(text))
	case strings.HasPrefix(path, "/status/"):
		code, _ := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		w.Write([]byte(text))
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(text))
	}
}
