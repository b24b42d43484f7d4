"""The built-in demo: ``gradscope demo`` records ``python -m gradscope.demo.train``."""
