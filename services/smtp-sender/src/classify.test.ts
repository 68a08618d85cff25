import assert from "node:assert/strict";
import { test } from "node:test";
import { classifySmtpError } from "./classify.js";

test("4xx and connection errors are retried, 5xx are final", () => {
  assert.equal(classifySmtpError({ responseCode: 451, response: "451 4.3.0 Try again later" }).kind, "retry");
  assert.equal(classifySmtpError({ code: "ETIMEDOUT", message: "Connection timeout" }).kind, "retry");
  assert.equal(classifySmtpError({ responseCode: 550, response: "550 5.1.1 User unknown" }).kind, "permanent");
});

test("Exchange's authentication refusals ask an administrator, with the fix", () => {
  const disabled = classifySmtpError({ responseCode: 535, response: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant." });
  assert.equal(disabled.kind, "needs-admin");
  assert.match(disabled.kind === "needs-admin" ? disabled.fix : "", /SmtpClientAuthenticationDisabled \$false/);
  const basic = classifySmtpError({ responseCode: 550, response: "550 5.7.30 Basic authentication is not supported for Client Submission." });
  assert.equal(basic.kind, "needs-admin");
  assert.equal(classifySmtpError({ responseCode: 535, response: "535 5.7.3 Authentication unsuccessful" }).kind, "needs-admin");
});
