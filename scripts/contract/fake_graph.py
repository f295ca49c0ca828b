"""A stand-in for Meta's Graph API during the contract test, speaking its wire format: it
confirms that any access token may use any number it is asked about (so creating a WhatsApp
inbox can succeed), and accepts every message sent. Usage: fake_graph.py PORT."""

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

asked = set()
lock = threading.Lock()


class Graph(BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urlparse(self.path).path.strip("/").split("/")
        if len(parts) == 3 and parts[2] == "phone_numbers":
            with lock:
                numbers = [{"id": n} for n in sorted(asked)]
            return self.answer({"data": numbers})
        number = parts[-1]
        with lock:
            asked.add(number)
        self.answer({"id": number, "display_phone_number": "+1 555-0100", "verified_name": "Contract"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer({"messaging_product": "whatsapp", "messages": [{"id": f"wamid.{uuid.uuid4().hex}"}]})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Graph).serve_forever()
