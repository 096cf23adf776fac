"""Everything a person looks at: ipywidgets inspectors, live plots and Gradio apps. Imports llmkit, never
the other way round."""
