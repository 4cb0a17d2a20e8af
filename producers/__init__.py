"""How work gets in: readers, chunking, dispatch by task name, and the client SDK.

from producers import Client
client = Client()                      # settings from SLUICE_* / the embedded stack
job = client.submit_file("msgs.jsonl", task="embed")
client.wait(job, on_progress=print)
for row in client.results(job): ...
"""

from producers.client import Client
from producers.dispatch import CeleryDispatcher, Dispatcher
from producers.dispatch_recording import ChunkSend, RecordingDispatcher

__all__ = ["CeleryDispatcher", "ChunkSend", "Client", "Dispatcher", "RecordingDispatcher"]
