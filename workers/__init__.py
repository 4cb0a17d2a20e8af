"""How work gets done: the Celery tasks, the Ray runtime, task handlers and explanations."""
