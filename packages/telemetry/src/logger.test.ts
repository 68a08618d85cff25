import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { createLogger } from "./logger.js";

test("secrets passed to the logger by mistake never reach the output", async () => {
  const out = new PassThrough();
  const lines: string[] = [];
  out.on("data", (d: Buffer) => lines.push(...d.toString().split("\n").filter(Boolean)));
  const log = createLogger({ service: "t", destination: out });
  log.info({ password: "hunter2-secret", auth: { password: "nested-secret", user: "ann" }, credential: { accessToken: "eyJ.token.value" } }, "login");
  log.info({ config: { auth: { clientSecret: "Xy8Q~client-secret" } } }, "config");
  await new Promise((r) => setImmediate(r));
  const text = lines.join("\n");
  for (const secret of ["hunter2-secret", "nested-secret", "eyJ.token.value", "Xy8Q~client-secret"]) {
    assert.ok(!text.includes(secret), `${secret} must not be logged`);
  }
  const first = JSON.parse(lines[0]!);
  assert.equal(first.service, "t");
  assert.equal(first.auth.user, "ann", "non-secret fields stay readable");
  assert.equal(first.password, "[redacted]");
});
