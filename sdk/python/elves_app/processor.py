"""Receive mode-P results from the Elves agent (agent-protocol section 5).

After an asynchronous run (queue, cron, agent cron) in mode ``P`` the agent hands
``(ins, flag, costtime, result)`` to the app's processor, named in ``appcfg.json``:

* ``{"Processor": {"Url": "http://127.0.0.1:10010/result", "Timeout": 5}}``: an HTTP POST
  of a JSON object ``{"ins": {...}, "flag": 1, "costtime": 12, "result": "..."}`` where
  ``ins`` has ``id, ip, type, mode, app, func, param, timeout, proxy``. Serve it with
  :func:`serve_http` (standard library only). Any 2xx answer counts as delivered.
* ``{"Processor": {"Addr": "127.0.0.1", "Port": 10010, "Timeout": 0}}``: the original
  Thrift call ``AppService.runProcessor(Reinstruct)`` (binary protocol, unframed). Serve it
  with :func:`serve_thrift` (needs the ``thrift`` package: ``pip install elves-app[thrift]``).

The handler is called as ``handler(ins, flag, costtime, result)`` with ``ins`` a ``dict``;
what it returns is ignored (the agent only logs the answer). An exception in the handler
answers an error, so the agent delivers the result again later.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: The largest request body serve_http accepts (the agent caps results at 4 MiB).
MAX_BODY = 16 * 1024 * 1024

INSTRUCT_FIELDS = ("id", "ip", "type", "mode", "app", "func", "param", "timeout", "proxy")


def parse_delivery(body):
    """Parses the JSON body of an HTTP delivery into ``(ins, flag, costtime, result)``."""
    data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("ins"), dict):
        raise ValueError("a delivery is an object with an \"ins\" object")
    ins = {k: data["ins"].get(k, 0 if k == "timeout" else "") for k in INSTRUCT_FIELDS}
    return ins, int(data.get("flag", 0)), int(data.get("costtime", 0)), str(data.get("result", ""))


def make_http_server(handler, host="127.0.0.1", port=10010, path="/result"):
    """An HTTP server (not started) that calls ``handler`` for each POST to ``path``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet by default
            pass

        def _reply(self, status, text):
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path.split("?", 1)[0] != path:
                return self._reply(404, "not found")
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self._reply(400, "bad Content-Length")
            if length < 0 or length > MAX_BODY:
                return self._reply(413, "body too large")
            try:
                ins, flag, costtime, result = parse_delivery(self.rfile.read(length))
            except (ValueError, TypeError, UnicodeDecodeError) as e:
                return self._reply(400, "bad delivery: %s" % e)
            try:
                handler(ins, flag, costtime, result)
            except Exception as e:  # the agent retries later
                return self._reply(500, "handler failed: %s" % e)
            return self._reply(200, "success")

    return ThreadingHTTPServer((host, port), Handler)


def serve_http(handler, host="127.0.0.1", port=10010, path="/result"):
    """Serves HTTP deliveries forever."""
    make_http_server(handler, host, port, path).serve_forever()


# ---------------------------------------------------------------------------------------
# Thrift (optional): the structures of the original IDL, in the form the Thrift compiler
# generates for Python, so that the ``thrift`` package encodes and decodes them.
#
#   struct Instruct { 1: string id  2: string ip  3: string type  4: string mode
#                     5: string app  6: string func  7: string param  8: i32 timeout
#                     9: string proxy }
#   struct Reinstruct { 1: Instruct ins  3: i32 flag  4: i32 costtime  5: string result }
#   service AppService { string runProcessor(1: Reinstruct reins) }


def _thrift():
    try:
        from thrift.Thrift import TType  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("serve_thrift needs the thrift package: pip install thrift") from e
    import thrift.Thrift as T

    return T


def _read_struct(iprot, fields):
    """Reads a struct whose fields are ``{id: (name, ttype, reader)}``; skips unknown ones."""
    T = _thrift()
    out = {}
    iprot.readStructBegin()
    while True:
        _, ftype, fid = iprot.readFieldBegin()
        if ftype == T.TType.STOP:
            break
        spec = fields.get(fid)
        if spec is not None and spec[1] == ftype:
            out[spec[0]] = spec[2](iprot)
        else:
            iprot.skip(ftype)
        iprot.readFieldEnd()
    iprot.readStructEnd()
    return out


def _read_instruct(iprot):
    T = _thrift()
    s = lambda p: p.readString()  # noqa: E731
    fields = {
        1: ("id", T.TType.STRING, s),
        2: ("ip", T.TType.STRING, s),
        3: ("type", T.TType.STRING, s),
        4: ("mode", T.TType.STRING, s),
        5: ("app", T.TType.STRING, s),
        6: ("func", T.TType.STRING, s),
        7: ("param", T.TType.STRING, s),
        8: ("timeout", T.TType.I32, lambda p: p.readI32()),
        9: ("proxy", T.TType.STRING, s),
    }
    got = _read_struct(iprot, fields)
    return {k: got.get(k, 0 if k == "timeout" else "") for k in INSTRUCT_FIELDS}


def read_reinstruct(iprot):
    """Reads a ``Reinstruct`` struct: returns ``(ins, flag, costtime, result)``."""
    T = _thrift()
    fields = {
        1: ("ins", T.TType.STRUCT, _read_instruct),
        3: ("flag", T.TType.I32, lambda p: p.readI32()),
        4: ("costtime", T.TType.I32, lambda p: p.readI32()),
        5: ("result", T.TType.STRING, lambda p: p.readString()),
    }
    got = _read_struct(iprot, fields)
    ins = got.get("ins") or {k: 0 if k == "timeout" else "" for k in INSTRUCT_FIELDS}
    return ins, got.get("flag", 0), got.get("costtime", 0), got.get("result", "")


class AppServiceProcessor(object):
    """A Thrift ``TProcessor`` for ``AppService.runProcessor``."""

    def __init__(self, handler):
        self._handler = handler

    def process(self, iprot, oprot):
        T = _thrift()
        name, mtype, seqid = iprot.readMessageBegin()
        if name != "runProcessor" or mtype != T.TMessageType.CALL:
            iprot.skip(T.TType.STRUCT)
            iprot.readMessageEnd()
            err = T.TApplicationException(
                T.TApplicationException.UNKNOWN_METHOD, "Unknown function %s" % name
            )
            oprot.writeMessageBegin(name, T.TMessageType.EXCEPTION, seqid)
            err.write(oprot)
            oprot.writeMessageEnd()
            oprot.trans.flush()
            return True
        # runProcessor_args { 1: Reinstruct reins }
        args = _read_struct(iprot, {1: ("reins", T.TType.STRUCT, read_reinstruct)})
        iprot.readMessageEnd()
        reins = args.get("reins")
        try:
            if reins is None:
                raise ValueError("runProcessor without its reins argument")
            self._handler(*reins)
            mtype, answer = T.TMessageType.REPLY, "success"
        except Exception as e:
            mtype = T.TMessageType.EXCEPTION
            answer = T.TApplicationException(T.TApplicationException.INTERNAL_ERROR, str(e))
        oprot.writeMessageBegin("runProcessor", mtype, seqid)
        if mtype == T.TMessageType.REPLY:
            # runProcessor_result { 0: string success }
            oprot.writeStructBegin("runProcessor_result")
            oprot.writeFieldBegin("success", T.TType.STRING, 0)
            oprot.writeString(answer)
            oprot.writeFieldEnd()
            oprot.writeFieldStop()
            oprot.writeStructEnd()
        else:
            answer.write(oprot)
        oprot.writeMessageEnd()
        oprot.trans.flush()
        return True


def make_thrift_server(handler, host="127.0.0.1", port=10010):
    """A threaded Thrift server (buffered transport, binary protocol), not started."""
    _thrift()
    from thrift.protocol import TBinaryProtocol
    from thrift.server import TServer
    from thrift.transport import TSocket, TTransport

    return TServer.TThreadedServer(
        AppServiceProcessor(handler),
        TSocket.TServerSocket(host=host, port=port),
        TTransport.TBufferedTransportFactory(),
        TBinaryProtocol.TBinaryProtocolFactory(),
        daemon=True,
    )


def serve_thrift(handler, host="127.0.0.1", port=10010):
    """Serves ``AppService.runProcessor`` forever."""
    make_thrift_server(handler, host, port).serve()


def run_in_thread(server):
    """Starts ``serve_forever``/``serve`` of a server in a daemon thread; returns the thread."""
    target = getattr(server, "serve_forever", None) or server.serve
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t
