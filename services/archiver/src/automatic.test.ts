import assert from "node:assert/strict";
import { test } from "node:test";
import { detectAutomatic } from "./automatic.js";

const hdr = (o: Record<string, string>) => new Map(Object.entries(o));

test("auto-replies, bounces and loops are told apart from people's mail", () => {
  assert.deepEqual(detectAutomatic(hdr({}), "ann@example.com", "text/plain"), { autoReply: false, bounce: false, loop: false });
  assert.equal(detectAutomatic(hdr({ "auto-submitted": "auto-replied" }), "ann@example.com", "text/plain").autoReply, true);
  assert.equal(detectAutomatic(hdr({ "auto-submitted": "no" }), "ann@example.com", "text/plain").autoReply, false);
  assert.equal(detectAutomatic(hdr({ "x-autoreply": "yes" }), "ann@example.com", "text/plain").autoReply, true);
  assert.equal(
    detectAutomatic(hdr({}), "MAILER-DAEMON@mx.example.com", "multipart/report; report-type=delivery-status; boundary=x").bounce,
    true,
  );
  assert.equal(detectAutomatic(hdr({ "x-loop": "support@example.com" }), "ann@example.com", "text/plain").loop, true);
});
