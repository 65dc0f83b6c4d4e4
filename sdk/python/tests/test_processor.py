"""The processor helpers: the HTTP server and the Thrift AppService processor."""

import json
import os
import sys
import threading
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from elves_app import processor  # noqa: E402

INS = {
    "id": "00000000000000A1", "ip": "10.0.0.1", "type": "queue", "mode": "P",
    "app": "demo", "func": "echo", "param": '{"s":"中文"}', "timeout": 5, "proxy": "",
}


class Http(unittest.TestCase):
    def setUp(self):
        self.got = []
        self.fail_next = False

        def handler(ins, flag, costtime, result):
            if self.fail_next:
                raise RuntimeError("not now")
            self.got.append((ins, flag, costtime, result))

        self.server = processor.make_http_server(handler, "127.0.0.1", 0, "/result")
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        processor.run_in_thread(self.server)

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_a_delivery_reaches_the_handler(self):
        body = json.dumps({"ins": INS, "flag": 1, "costtime": 12, "result": "é"}).encode()
        self.assertEqual(self.post("/result", body), (200, "success"))
        self.assertEqual(self.got, [(INS, 1, 12, "é")])

    def test_refusals(self):
        cases = [
            ("wrong path", "/other", b"{}", 404),
            ("not JSON", "/result", b"{nope", 400),
            ("no ins", "/result", b'{"flag": 1}', 400),
        ]
        for what, path, body, status in cases:
            with self.subTest(what):
                self.assertEqual(self.post(path, body)[0], status)
        self.assertEqual(self.got, [])

    def test_a_failing_handler_answers_500_so_the_agent_retries(self):
        self.fail_next = True
        body = json.dumps({"ins": INS, "flag": 0, "costtime": 1, "result": ""}).encode()
        self.assertEqual(self.post("/result", body)[0], 500)


try:
    import thrift  # noqa: F401

    HAVE_THRIFT = True
except ImportError:
    HAVE_THRIFT = False


@unittest.skipUnless(HAVE_THRIFT, "the thrift package is not installed (pip install thrift)")
class Thrift(unittest.TestCase):
    def test_run_processor_round_trip(self):
        from thrift.protocol import TBinaryProtocol
        from thrift.Thrift import TMessageType, TType
        from thrift.transport import TSocket, TTransport

        got = []
        done = threading.Event()

        def handler(*reins):
            got.append(reins)
            done.set()

        server = processor.make_thrift_server(handler, "127.0.0.1", 0)
        server.serverTransport.listen()
        port = server.serverTransport.handle.getsockname()[1]
        server.serverTransport.listen = lambda: None
        processor.run_in_thread(server)

        sock = TSocket.TSocket("127.0.0.1", port)
        trans = TTransport.TBufferedTransport(sock)
        p = TBinaryProtocol.TBinaryProtocol(trans)
        trans.open()
        p.writeMessageBegin("runProcessor", TMessageType.CALL, 7)
        p.writeStructBegin("runProcessor_args")
        p.writeFieldBegin("reins", TType.STRUCT, 1)
        p.writeStructBegin("Reinstruct")
        p.writeFieldBegin("ins", TType.STRUCT, 1)
        p.writeStructBegin("Instruct")
        for i, k in enumerate(processor.INSTRUCT_FIELDS, 1):
            if k == "timeout":
                p.writeFieldBegin(k, TType.I32, i)
                p.writeI32(INS[k])
            else:
                p.writeFieldBegin(k, TType.STRING, i)
                p.writeString(INS[k])
            p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeFieldEnd()
        for fid, v in ((3, 1), (4, 42)):
            p.writeFieldBegin("x", TType.I32, fid)
            p.writeI32(v)
            p.writeFieldEnd()
        p.writeFieldBegin("result", TType.STRING, 5)
        p.writeString("résultat")
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeMessageEnd()
        trans.flush()

        name, mtype, seqid = p.readMessageBegin()
        self.assertEqual((name, mtype, seqid), ("runProcessor", TMessageType.REPLY, 7))
        p.readStructBegin()
        _, ftype, fid = p.readFieldBegin()
        self.assertEqual((ftype, fid), (TType.STRING, 0))
        self.assertEqual(p.readString(), "success")
        trans.close()
        self.assertTrue(done.wait(10))
        self.assertEqual(got, [(INS, 1, 42, "résultat")])


if __name__ == "__main__":
    unittest.main()
