import assert from "node:assert/strict";
import { test } from "node:test";
import { transportOptions } from "./transport.js";

const password = { version: "v1" as const, mechanism: "PLAIN" as const, username: "support@acme.test", password: "pw" };
const base = { host: "smtp.acme.test", verifyCertificate: true, maxMessageBytes: 1, ratePerMinute: 30, recipientsPerMinute: 100, maxRecipients: 50 };

test("STARTTLS on 587 is required, never silently plain, and certificates are verified", () => {
  const o = transportOptions({ ...base, tls: "starttls" }, password);
  assert.equal(o.port, 587);
  assert.equal(o.secure, false);
  assert.equal(o.requireTLS, true);
  assert.equal((o.tls as { rejectUnauthorized: boolean }).rejectUnauthorized, true);
});

test("implicit TLS uses 465; only an explicit setting turns verification off", () => {
  const o = transportOptions({ ...base, tls: "implicit", verifyCertificate: false }, password);
  assert.equal(o.port, 465);
  assert.equal(o.secure, true);
  assert.equal((o.tls as { rejectUnauthorized: boolean }).rejectUnauthorized, false);
});

test("an OAuth credential logs in with XOAUTH2", () => {
  const o = transportOptions({ ...base, tls: "starttls" }, { version: "v1", mechanism: "XOAUTH2", username: "support@acme.test", accessToken: "t", expiresAt: new Date().toISOString() });
  assert.deepEqual(o.auth, { type: "OAuth2", user: "support@acme.test", accessToken: "t" });
});
