"""A Hugging Face causal LM wrapped as an MLflow pyfunc model for the Prompt Engineering UI."""
