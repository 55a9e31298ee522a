"""The Gradio classification demo."""
