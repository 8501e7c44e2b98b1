"""The whole pipeline on the local stack: chaos, deadlines, the demo."""
