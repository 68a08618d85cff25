import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { PostroomConfigInput } from "@postroom/config";
import { waitFor } from "@postroom/testkit";
import { APP_ID, AuthWorld, MAILBOX, TENANT_ID } from "../support/auth-world.js";
import { customerEmail } from "../support/mail.js";

let w: AuthWorld;

before(async () => {
  w = await AuthWorld.create("authpop3", {
    // The same Microsoft 365 mailbox read a second time, over POP3, by the poller: the token comes
    // from token-service and the login is SASL XOAUTH2, as Exchange Online's POP3 wants it.
    tweak: (config: PostroomConfigInput, world) => {
      const tenant = config.tenants[0]!;
      const imap = tenant.mailboxes[0]!;
      tenant.mailboxes.push({
        id: "support-pop",
        address: MAILBOX,
        inbound: { protocol: "pop3", host: "127.0.0.1", port: world.dovecot.info.pop3Port, tls: "none", checkIntervalSeconds: 2, pop3LeaveOnServer: true },
        auth: { type: "microsoft365", tenantId: TENANT_ID, clientId: APP_ID, clientSecret: "env:M365_CLIENT_SECRET", authorityHost: (imap.auth as { authorityHost: string }).authorityHost },
      });
    },
  });
  await w.system.start();
  // Both mailboxes must have made their first start (from-now) before the message arrives: a
  // mailbox first opened after it would rightly leave it alone as older than its first start.
  await w.mailboxReady(40_000, "support");
  await w.mailboxReady(40_000, "support-pop");
});

after(async () => {
  await w?.close();
});

test("an OAuth mailbox is read over POP3 by the poller with XOAUTH2 and a token from token-service", { timeout: 90_000 }, async () => {
  const raw = customerEmail({ to: MAILBOX, subject: "Read me over POP3" });
  await w.dovecot.appendMessage(MAILBOX, raw);
  const rows = await waitFor(
    async () => {
      const r = await w.rows<{ mailbox: string; protocol: string; sha256: string }>(
        "SELECT mailbox, protocol, sha256 FROM messages WHERE subject = 'Read me over POP3' ORDER BY mailbox",
      );
      return r.length === 2 ? r : undefined;
    },
    { timeoutMs: 60_000, what: () => `the message archived from both the IMAP and the POP3 mailbox\n${w.system.dump()}` },
  );
  assert.deepEqual(
    rows.map((r) => [r.mailbox, r.protocol]),
    [
      ["support", "imap"],
      ["support-pop", "pop3"],
    ],
  );
  assert.equal(rows[0]!.sha256, rows[1]!.sha256, "POP3 fetched the same bytes as IMAP");
  const log = await w.dovecot.readLog();
  assert.match(log, /pop3-login: (Info: )?Login: user=<support@acme\.test>, method=XOAUTH2/, "the POP3 login used XOAUTH2");
  assert.doesNotMatch(log, /pop3-login: .*auth failed/i, "no refused POP3 login");
});
