"""The web console `sluice api` serves at `/` (issue 23): jobs with live progress and an ETA,
a job's failures, chunk timeline and results beside their explanations, the model registry,
and for operators the system. Server-rendered pages (Jinja2, autoescaped) with one small
script; signed in with an API key exchanged for an HttpOnly, SameSite=Strict cookie."""
