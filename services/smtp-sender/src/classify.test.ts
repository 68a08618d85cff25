import assert from "node:assert/strict";
import { test } from "node:test";
import { EXCHANGE_BASIC_SMTP_END } from "@postroom/config";
import { classifySmtpError, defaultRetryPolicy, planRetry } from "./classify.js";

test("4xx and connection errors are retried, 5xx are final", () => {
  assert.equal(classifySmtpError({ responseCode: 451, response: "451 4.3.0 Try again later" }).kind, "retry");
  assert.equal(classifySmtpError({ code: "ETIMEDOUT", message: "Connection timeout" }).kind, "retry");
  assert.equal(classifySmtpError({ responseCode: 550, response: "550 5.1.1 User unknown" }).kind, "permanent");
});

test("Exchange's authentication refusals ask an administrator, with the fix", () => {
  const disabled = classifySmtpError({ responseCode: 535, response: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant." });
  assert.equal(disabled.kind, "needs-admin");
  assert.match(disabled.kind === "needs-admin" ? disabled.fix : "", /SmtpClientAuthenticationDisabled \$false/);
  const basicOff = classifySmtpError({ responseCode: 535, response: "535 5.7.139 Authentication unsuccessful, basic authentication is disabled." });
  assert.match(basicOff.kind === "needs-admin" ? basicOff.fix : "", /end of December 2026/);
  const basic = classifySmtpError({ responseCode: 550, response: "550 5.7.30 Basic authentication is not supported for Client Submission." });
  assert.equal(basic.kind, "needs-admin");
  // The same fix config check and the Softdial import name, word for word.
  for (const v of [disabled, basicOff, basic]) assert.ok(v.kind === "needs-admin" && v.fix.includes(EXCHANGE_BASIC_SMTP_END.fix));
  assert.equal(classifySmtpError({ responseCode: 535, response: "535 5.7.3 Authentication unsuccessful" }).kind, "needs-admin");
});

test("an untrusted TLS certificate asks an administrator instead of retrying forever", () => {
  const v = classifySmtpError({ code: "ESOCKET", message: "self-signed certificate" });
  assert.equal(v.kind, "needs-admin");
  assert.match(v.kind === "needs-admin" ? v.fix : "", /verifyCertificate/);
});

test("retries back off exponentially with jitter up to the cap, and give up after a day", () => {
  const half = () => 0.5;
  const retry = { kind: "retry" as const, reason: "451 4.3.0 later" };
  assert.deepEqual(planRetry(retry, 1, 0, defaultRetryPolicy, half), { action: "retry", delayMs: 750 });
  assert.deepEqual(planRetry(retry, 2, 0, defaultRetryPolicy, half), { action: "retry", delayMs: 1500 });
  assert.deepEqual(planRetry(retry, 30, 0, defaultRetryPolicy, () => 1), { action: "retry", delayMs: 5 * 60_000 });
  const late = planRetry(retry, 40, 25 * 3600_000, defaultRetryPolicy, half);
  assert.equal(late.action, "give-up");
  assert.match(late.action === "give-up" ? late.reason : "", /451 4\.3\.0 later/);
});

test("a mailbox that needs an administrator is retried slowly, not given up at once", () => {
  const plan = planRetry({ kind: "needs-admin", reason: "535 5.7.139", fix: "x" }, 1, 0);
  assert.deepEqual(plan, { action: "retry", delayMs: defaultRetryPolicy.needsAdminDelayMs });
});
