import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { IngestWorld } from "../support/ingest-world.js";

const USER = "support@acme.test";
const RIGHT = "the right password";
let w: IngestWorld;
let secretFile = "";

before(async () => {
  w = await IngestWorld.create("ingest-auth", [{ id: "support", user: USER, password: RIGHT, inbound: { checkIntervalSeconds: 5 } }], {
    tweak: (config, world) => {
      // The password comes from a file that token-service reads on every request: fixing the
      // file is fixing the config, no restart needed.
      const mailbox = config.tenants[0]!.mailboxes[0]! as { auth: { type: string; password: string } };
      secretFile = join(world.dir.path, "support.password");
      mailbox.auth = { type: "password", password: `file:${secretFile}` };
    },
  });
});
after(async () => {
  await w?.close();
});

/** Failed IMAP logins Dovecot saw for the user so far. */
async function failedLogins(): Promise<number> {
  const log = await w.dovecot.readLog();
  return log.split("\n").filter((l) => l.includes("imap-login") && /auth failed/i.test(l) && l.includes(USER)).length;
}

test("a wrong password leads to needs-admin with the server's text, a handful of attempts a minute at most, and recovery once fixed", async () => {
  await writeFile(secretFile, "a wrong password", { mode: 0o600 });
  const started = Date.now();
  const poller = w.startPoller("p");
  const status = await w.waitForState("acme", "support", "needs-admin");
  assert.match(status.lastError?.message ?? "", /AUTHENTICATIONFAILED|Authentication failed/i, "the server's own words");
  assert.ok(status.lastError?.fix, "and the fix");
  assert.doesNotMatch(JSON.stringify(status), /a wrong password/, "never the password itself");

  // Watch for 45 s: the first refusal, one fresh-credential retry, then one attempt every 20 s.
  await new Promise((r) => setTimeout(r, Math.max(0, 45_000 - (Date.now() - started))));
  const attempts = await failedLogins();
  const perMinute = (attempts * 60_000) / (Date.now() - started);
  console.log(`${attempts} failed logins in ${Date.now() - started} ms (${perMinute.toFixed(1)} a minute)`);
  assert.ok(attempts >= 2 && attempts <= 5, `${attempts} login attempts in 45 s`);
  assert.equal((await w.status("acme", "support"))?.state, "needs-admin", "still needs an administrator, not flapping");

  await writeFile(secretFile, RIGHT, { mode: 0o600 });
  const fixedAt = Date.now();
  await w.waitForState("acme", "support", "idle", 30_000);
  console.log(`recovered ${Date.now() - fixedAt} ms after the password was fixed`);
  await w.dovecot.appendMessage(USER, customerEmail({ to: USER, subject: "after the fix" }));
  await waitFor(async () => (await w.count("SELECT count(*) AS n FROM messages")) === 1, { timeoutMs: 20_000, what: () => `archived\n${w.dump()}` });
  assert.equal(poller.logs.filter((l) => l.includes(RIGHT) || l.includes("a wrong password")).length, 0, "no password in the poller's logs");
});
