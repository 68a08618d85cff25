import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { freePort } from "@postroom/testkit";
import { checkClock, checkEndpoint } from "./test-auth-env.js";
import { microsoftSanity } from "./test-auth-steps.js";

async function dateServer(offsetMs: number): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { date: new Date(Date.now() + offsetMs).toUTCString() });
    res.end("ok");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((r) => server.close(() => r())) };
}

test("a local clock ten minutes off the server's Date header fails the clock check with the fix", async () => {
  const server = await dateServer(-10 * 60_000);
  try {
    const r = await checkClock(server.url);
    assert.equal(r.verdict, "fail");
    assert.match(r.summary, /ahead of the identity platform/);
    assert.match(r.explanation?.fix ?? "", /NTP|timedatectl/);
  } finally {
    await server.close();
  }
});

test("a clock within a second of the server passes", async () => {
  const server = await dateServer(0);
  try {
    assert.equal((await checkClock(server.url)).verdict, "pass");
  } finally {
    await server.close();
  }
});

test("a closed port fails the TCP check and stops there", async () => {
  const port = await freePort();
  const results = await checkEndpoint({ role: "IMAP", host: "127.0.0.1", port, implicitTls: true });
  assert.deepEqual(results.map((r) => [r.step, r.verdict]), [["dns", "pass"], ["tcp", "fail"]]);
  assert.equal(results[1]!.explanation?.code, "ECONNREFUSED");
});

test("config sanity names the tenant alias, a malformed tenant, a Secret ID and a scope without /.default", () => {
  const guid = "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66";
  assert.equal(microsoftSanity({ tenantId: "common", clientId: guid }).find((r) => r.verdict === "fail")?.explanation?.code, "AADSTS9001023");
  assert.equal(microsoftSanity({ tenantId: "not a tenant", clientId: guid }).find((r) => r.verdict === "fail")?.explanation?.code, "AADSTS900023");
  assert.match(microsoftSanity({ tenantId: "contoso.onmicrosoft.com", clientId: guid, clientSecret: guid }).find((r) => r.verdict === "warn")?.summary ?? "", /Secret ID/);
  assert.match(microsoftSanity({ tenantId: guid, clientId: guid, scope: "https://outlook.office365.com/IMAP.AccessAsApp" }).find((r) => r.verdict === "warn")?.summary ?? "", /\/\.default/);
  assert.ok(microsoftSanity({ tenantId: guid, clientId: "not-a-guid" }).some((r) => r.verdict === "fail" && /not a GUID/.test(r.summary)));
  assert.deepEqual(microsoftSanity({ tenantId: guid, clientId: guid, clientSecret: "Xq8~value" }).map((r) => r.verdict), ["pass"]);
});
