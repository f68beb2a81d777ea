"""The bench routes on Flask (WSGI, served by gunicorn)."""

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/plaintext")
def plaintext():
    return Response("Hello, World!", mimetype="text/plain")


@app.get("/json")
def json_():
    return jsonify(message="Hello, World!")


@app.get("/users/<int:uid>")
def user(uid):
    return jsonify(id=uid, name=f"user-{uid}")


@app.post("/echo-body")
def echo_body():
    return Response(request.get_data(), mimetype="application/octet-stream")


@app.get("/healthz")
def healthz():
    return Response("ok", mimetype="text/plain")
