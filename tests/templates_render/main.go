// Renders chat templates the way Ollama does (text/template, missingkey=zero, Ollama's FuncMap names)
// so the poisoned-template corpus can prove each payload reaches the prompt only with its trigger.
// Input on stdin: a JSON list of cases; output: a JSON list of {"output": "...", "error": "..."}.
// The clock of currentDate/yesterdayDate comes from each case ("date": "2006-01-02") so time bombs
// can be tested on both sides of their date.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"time"
)

type Function struct {
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type ToolCall struct {
	Function Function `json:"function"`
}

type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	Thinking  string     `json:"thinking"`
	ToolCalls []ToolCall `json:"tool_calls"`
	ToolName  string     `json:"tool_name"`
}

type ToolFunction struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Parameters  map[string]any `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
}

func (t Tool) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

type Case struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools"`
	Date     string    `json:"date"`
}

type Result struct {
	Output string `json:"output"`
	Error  string `json:"error,omitempty"`
}

func render(c Case) Result {
	now, err := time.Parse("2006-01-02", c.Date)
	if err != nil {
		now = time.Now()
	}
	funcs := template.FuncMap{
		"json": func(v any) string {
			b, _ := json.Marshal(v)
			return string(b)
		},
		"currentDate":      func(args ...string) string { return now.Format("2006-01-02") },
		"yesterdayDate":    func(args ...string) string { return now.AddDate(0, 0, -1).Format("2006-01-02") },
		"toTypeScriptType": func(v any) string { return "any" },
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return Result{Error: err.Error()}
	}
	var system []string
	var prompt, response string
	for _, m := range c.Messages {
		switch m.Role {
		case "system":
			system = append(system, m.Content)
		case "user":
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	var b bytes.Buffer
	values := map[string]any{
		"System": strings.Join(system, "\n\n"), "Messages": c.Messages, "Tools": c.Tools,
		"Prompt": prompt, "Response": response, "Think": false, "ThinkLevel": "", "IsThinkSet": false,
	}
	if err := tmpl.Execute(&b, values); err != nil {
		return Result{Output: b.String(), Error: err.Error()}
	}
	return Result{Output: b.String()}
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	out := make([]Result, len(cases))
	for i, c := range cases {
		out[i] = render(c)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
