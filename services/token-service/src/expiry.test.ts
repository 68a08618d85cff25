import assert from "node:assert/strict";
import { after, test } from "node:test";
import { rsaCertificate, tempDir } from "@postroom/testkit";
import { certificateExpiry, expiryWarnings } from "./expiry.js";

const dir = tempDir("expiry");
after(() => dir.remove());

test("a client secret expiring within the warning window is reported with its date and fix", () => {
  const w = expiryWarnings({ clientSecretExpires: "2026-12-10" }, new Date("2026-11-28T12:00:00Z"));
  assert.equal(w.length, 1);
  assert.equal(w[0]!.what, "client secret");
  assert.equal(w[0]!.daysLeft, 11);
  assert.match(w[0]!.message, /expires on 2026-12-10/);
  assert.match(w[0]!.fix, /Certificates & secrets/);
});

test("a secret far from expiry gives no warning; an expired one says expired", () => {
  assert.deepEqual(expiryWarnings({ clientSecretExpires: "2027-12-10" }, new Date("2026-11-28T00:00:00Z")), []);
  assert.match(expiryWarnings({ clientSecretExpires: "2026-11-01" }, new Date("2026-11-28T00:00:00Z"))[0]!.message, /expired on 2026-11-01/);
});

test("a certificate's expiry is read from the certificate itself", async () => {
  const cert = await rsaCertificate(dir.path, "expiring"); // valid 30 days
  const notAfter = certificateExpiry(cert.certificatePem)!;
  const days = (notAfter.getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 29 && days <= 30.01, `30 days, got ${days}`);
  assert.equal(expiryWarnings({ certificatePem: cert.certificatePem }, new Date(), 31)[0]?.what, "certificate");
  assert.deepEqual(expiryWarnings({ certificatePem: cert.certificatePem }, new Date(), 7), []);
});
