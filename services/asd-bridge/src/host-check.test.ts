import assert from "node:assert/strict";
import { test } from "node:test";
import { HostCheck, hostOf } from "./host-check.js";

test("by default a loopback API answers its listen host and the loopback names only", () => {
  const h = new HostCheck({ host: "127.0.0.1" });
  for (const ok of ["127.0.0.1:8480", "localhost:8480", "LOCALHOST", "[::1]:8480", "127.0.0.1"]) assert.ok(h.allows(ok), ok);
  for (const bad of ["evil.example:8480", "evil.example", "10.0.0.5:8480", "127.0.0.1.nip.io", "localhost.evil.example", "", undefined, "a b", "127.0.0.1:8480/x"]) assert.ok(!h.allows(bad), String(bad));
});

test("publicUrl's host is allowed; allowedHosts replaces the defaults", () => {
  assert.ok(new HostCheck({ host: "127.0.0.1", publicUrl: "https://desk.acme.example/" }).allows("desk.acme.example"));
  const listed = new HostCheck({ host: "127.0.0.1", allowedHosts: ["Desk.Acme.Example"] });
  assert.ok(listed.allows("desk.acme.example:443"));
  assert.ok(!listed.allows("127.0.0.1:8480"), "only what is listed");
});

test("listening on every address, any IP literal is answered but a name must be listed", () => {
  const h = new HostCheck({ host: "0.0.0.0" });
  assert.ok(h.allows("10.1.2.3:8480"));
  assert.ok(h.allows("[fd00::1]:8480"));
  assert.ok(h.allows("localhost"));
  assert.ok(!h.allows("rebound.evil.example:8480"));
});

test("hostOf reads name, name:port and bracketed IPv6 and refuses anything else", () => {
  assert.equal(hostOf("Example.COM.:80"), "example.com");
  assert.equal(hostOf("[::1]:8480"), "::1");
  assert.equal(hostOf("user@example.com"), undefined);
  assert.equal(hostOf("example.com\r\nX: y"), undefined);
});
