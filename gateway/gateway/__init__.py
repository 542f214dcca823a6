"""The MLflow AI Gateway side of the stack: config rendering and the `pyfunc` and
`openai-compatible` providers."""
