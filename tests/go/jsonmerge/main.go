// Decodes request bodies (one JSON document per line on stdin) the way Ollama does — encoding/json
// into structs shaped like api.ChatRequest (Options map[string]any), openai.ChatCompletionRequest
// (MaxTokens *int) and openai.ResponsesRequest (MaxOutputTokens *int) — and prints what Ollama would
// take as num_predict, and the other options it keeps, one JSON line per input line.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

type native struct {
	Model   string         `json:"model"`
	Options map[string]any `json:"options"`
}

type openai struct {
	Model           string `json:"model"`
	MaxTokens       *int   `json:"max_tokens"`
	MaxOutputTokens *int   `json:"max_output_tokens"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		var n native
		var o openai
		errN := json.Unmarshal(in.Bytes(), &n)
		errO := json.Unmarshal(in.Bytes(), &o)
		out := map[string]any{"options": n.Options, "max_tokens": o.MaxTokens, "max_output_tokens": o.MaxOutputTokens}
		if errN != nil || errO != nil {
			out["error"] = fmt.Sprint(errN, errO)
		}
		line, _ := json.Marshal(out)
		fmt.Println(string(line))
	}
}
