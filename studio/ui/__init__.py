"""The Gradio app: one module per tab, each a thin layer over the ``studio`` library."""
