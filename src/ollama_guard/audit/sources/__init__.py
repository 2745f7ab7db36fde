"""One module per place Ollama's configuration or state can be read from."""
