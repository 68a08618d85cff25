import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { test } from "node:test";
import { ClientAddress } from "./client-address.js";

const req = (peer: string, xff?: string) => ({ socket: { remoteAddress: peer }, headers: xff === undefined ? {} : { "x-forwarded-for": xff } }) as unknown as IncomingMessage;

test("without trusted proxies the socket's peer is the client, whatever X-Forwarded-For says", () => {
  const c = new ClientAddress([]);
  assert.equal(c.of(req("::ffff:192.0.2.7", "198.51.100.1")), "192.0.2.7");
});

test("behind a trusted proxy the last forwarded address is the client; an untrusted peer's header is ignored", () => {
  const c = new ClientAddress(["10.0.0.0/8", "fd00::1"]);
  assert.equal(c.of(req("10.2.3.4", "6.6.6.6, 198.51.100.1")), "198.51.100.1", "only the address the proxy appended");
  assert.equal(c.of(req("fd00::1", "198.51.100.2")), "198.51.100.2");
  assert.equal(c.of(req("192.0.2.7", "198.51.100.1")), "192.0.2.7");
  assert.equal(c.of(req("10.2.3.4", "not an address")), "10.2.3.4");
  assert.equal(c.of(req("10.2.3.4")), "10.2.3.4");
});
