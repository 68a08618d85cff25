import assert from "node:assert/strict";
import { test } from "node:test";
import { PostroomConfig } from "@postroom/config";
import { operatorNatsOptions } from "./nats-operator.js";

const config = (nats: Record<string, unknown>) =>
  PostroomConfig.parse({
    version: 1,
    nats,
    database: { url: "postgres://postgres@127.0.0.1:5432/postroom" },
    archive: { path: "/tmp/archive" },
    tenants: [{ id: "acme", acd: { type: "builtin" }, mailboxes: [{ id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", port: 1, tls: "none" }, auth: { type: "password", password: "env:X" } }] }],
  });

test("an operator's command connects anonymously and in the clear when the config and environment ask for nothing else", () => {
  assert.deepEqual(operatorNatsOptions(config({ url: "nats://127.0.0.1:4222" }), "postroom-status", {}), { url: "nats://127.0.0.1:4222", name: "postroom-status" });
});

test("an operator's command takes TLS from nats.tls, as the services do, and its own user from NATS_USER / NATS_PASSWORD, never a service's", () => {
  const c = config({ url: "tls://127.0.0.1:4443", tls: { ca: "/etc/postroom/ca.crt" }, users: { archiver: { user: "archiver", password: "env:ARCHIVER_PW" } } });
  assert.deepEqual(operatorNatsOptions(c, "postroom-status", { NATS_USER: "operator", NATS_PASSWORD: "s3cret", ARCHIVER_PW: "not-mine" }), {
    url: "tls://127.0.0.1:4443",
    name: "postroom-status",
    user: "operator",
    password: "s3cret",
    tls: { caFile: "/etc/postroom/ca.crt", certFile: undefined, keyFile: undefined, verify: true },
  });
  assert.equal(operatorNatsOptions(c, "postroom-status", {}).user, undefined, "without NATS_USER: no user, not the archiver's");
});
