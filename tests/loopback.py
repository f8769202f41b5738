"""An HTTP server on loopback for the tests that fetch remote SQuAD files."""

import contextlib
import functools
import http.server
import threading


class Site:
    def __init__(self, server):
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        self.requests = []  # the path of every request, in order

    def stop(self):
        """Stops serving (again is harmless): the network is gone for whatever follows."""
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def serve(directory):
    """Serves `directory` on a free loopback port while the block runs; yields a Site."""
    site = None

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            site.requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
    )
    site = Site(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        site.stop()
