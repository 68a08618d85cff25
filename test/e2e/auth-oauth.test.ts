// Microsoft 365 app-only OAuth end to end: token-service gets 5-second tokens from the fake
// identity platform; imap-poller reads the mailbox over IMAP with XOAUTH2 (Dovecot offers only
// XOAUTH2, like Exchange Online, so imapflow cannot fall back to OAUTHBEARER); POP3 logs in with
// AUTH XOAUTH2 using token-service's tokens (the poller's POP3 path is issue 4's, so the test
// speaks POP3 itself); smtp-sender sends replies through Postfix, which checks the token through
// Dovecot and delivers into the recipient's Dovecot mailbox. For a minute, with logins forced
// every few seconds, nothing may fail to authenticate, and no secret may appear in any log or in
// the NATS traffic.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CredentialClient } from "@postroom/nats-kit";
import { LineSocket, waitFor } from "@postroom/testkit";
import { ImapFlow } from "imapflow";
import { inboxSubjects } from "../support/operator.js";
import { APP_ID, AuthWorld, CLIENT_SECRET, CUSTOMER, FIXTURE_PASSWORD, MAILBOX } from "../support/auth-world.js";

let w: AuthWorld;
const traffic: string[] = [];

before(async () => {
  w = await AuthWorld.create("authoauth", { tokenLifetimeSeconds: 5 });
  for (const subject of [`${w.namespace}.>`, "_INBOX.>", `$JS.API.>`]) {
    const sub = w.nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) traffic.push(`${m.subject} ${new TextDecoder().decode(m.data)}`);
    })();
  }
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

function customerMail(n: number): string {
  return [
    `From: Ann <${CUSTOMER}>`,
    `To: ${MAILBOX}`,
    `Subject: Order question ${n}`,
    `Message-ID: <order-${n}@customer.test>`,
    `Date: ${new Date().toUTCString()}`,
    "",
    `Where is order ${n}?`,
    "",
  ].join("\r\n");
}

/** One POP3 session: AUTH XOAUTH2 with a token from token-service, then STAT. Returns the replies. */
async function pop3Login(credentials: CredentialClient): Promise<{ auth: string; stat: string }> {
  const c = await credentials.get("acme", "support", "pop3");
  assert.equal(c.mechanism, "XOAUTH2");
  if (c.mechanism !== "XOAUTH2") throw new Error("unreachable");
  const pop = await LineSocket.connect(w.dovecot.info.host, w.dovecot.info.pop3Port);
  try {
    await pop.readLine();
    const ir = Buffer.from(`user=${c.username}\x01auth=Bearer ${c.accessToken}\x01\x01`).toString("base64");
    const auth = await pop.command(`AUTH XOAUTH2 ${ir}`);
    const stat = auth.startsWith("+OK") ? await pop.command("STAT") : "";
    await pop.command("QUIT").catch(() => "");
    return { auth, stat };
  } finally {
    pop.close();
  }
}

test("Dovecot offers only XOAUTH2 for OAuth, as Exchange Online does", async () => {
  const imap = await LineSocket.connect(w.dovecot.info.host, w.dovecot.info.imapPort);
  const greeting = await imap.readLine();
  imap.close();
  assert.match(greeting, /AUTH=XOAUTH2/);
  assert.doesNotMatch(greeting, /OAUTHBEARER/);
});

test("with 5-second tokens, a minute of IMAP reading, POP3 logins and SMTP replies keeps working without a single authentication failure", { timeout: 150_000 }, async () => {
  const credentials = new CredentialClient(w.nc, w.names);
  const started = Date.now();
  let round = 0;
  const pop3: Array<{ auth: string; stat: string }> = [];
  const expectedKeys: number[] = [];
  while (Date.now() - started < 60_000) {
    round++;
    await w.dovecot.appendMessage(MAILBOX, customerMail(round));
    expectedKeys.push(round);
    if (round % 3 === 0) {
      // Cut the poller's IMAP connection: it logs in again with whatever token is current.
      await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
    }
    pop3.push(await pop3Login(credentials));
    await w.requestSend({ commandId: `oauth-minute-${round}`, tenant: "acme", mailbox: "support", kind: "new", to: [CUSTOMER], subject: `Update ${round}`, text: `Reply number ${round}.` });
    await new Promise((r) => setTimeout(r, 3_000));
  }
  assert.ok(round >= 12, `${round} rounds in a minute`);

  // Every customer message archived, every reply delivered into the customer's real mailbox.
  await waitFor(
    async () => (await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages WHERE direction = 'inbound'"))[0]!.n === String(round),
    { timeoutMs: 60_000, what: () => `${round} inbound messages archived\n${w.system.dump()}` },
  );
  const delivered = await waitFor(
    async () => {
      const subjects = await inboxSubjects(w.dovecot, CUSTOMER);
      return subjects.length >= round ? subjects : undefined;
    },
    { timeoutMs: 60_000, what: () => `${round} replies delivered to ${CUSTOMER}\n${w.system.dump()}` },
  );
  assert.equal(new Set(delivered.filter((s) => s.startsWith("Update "))).size, round);

  // Not one authentication failure anywhere.
  assert.ok(pop3.every((p) => p.auth.startsWith("+OK") && p.stat.startsWith("+OK")), JSON.stringify(pop3));
  const dovecotLog = await w.dovecot.readLog();
  const xoauthLogins = dovecotLog.split("\n").filter((l) => /Login: user=<support@acme\.test>, method=XOAUTH2/.test(l));
  assert.ok(xoauthLogins.filter((l) => l.includes("imap-login")).length >= round / 3, "the poller logged in again after each kick");
  assert.ok(xoauthLogins.some((l) => l.includes("pop3-login")));
  assert.doesNotMatch(dovecotLog, /auth failed|Authentication failed|oauth2 failed/i);
  const postfixLog = await import("node:fs/promises").then((fs) => fs.readFile(w.postfix.info.logPath, "utf8"));
  assert.match(postfixLog, /sasl_method=XOAUTH2, sasl_username=support@acme\.test/);
  assert.doesNotMatch(postfixLog, /authentication failed/i);
  assert.ok(w.idp.introspections.length > round && w.idp.introspections.every((i) => i.active), "every token Dovecot checked was valid");
  assert.deepEqual(new Set(w.idp.introspections.map((i) => i.service)), new Set(["imap", "pop3", "smtp"]), "IMAP, POP3 and SMTP (SMTP.SendAsApp) each checked tokens");
  assert.ok(w.idp.requestsFor(APP_ID).length >= 8, `tokens were renewed (${w.idp.requestsFor(APP_ID).length} token requests)`);
  const serviceLogs = w.system.logs.map((l) => l.line);
  assert.ok(!serviceLogs.some((l) => /server refused the credential|needs an administrator|auth-failed/.test(l)), w.system.dump());
});

test("an app without a grant on the mailbox is refused at IMAP AUTHENTICATE; the poller asks once for a fresh token, then reports needs-admin", { timeout: 90_000 }, async () => {
  await w.oauth.revoke(MAILBOX, APP_ID);
  try {
    await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
    const { openKv } = await import("@postroom/nats-kit");
    const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
    const status = await waitFor(
      async () => {
        const e = await kv.get(w.names.mailboxKey("acme", "support"));
        const s = e?.value.length ? (e.json() as { state: string; lastError: { code: string | null; fix: string | null } | null }) : undefined;
        return s?.state === "needs-admin" ? s : undefined;
      },
      { timeoutMs: 60_000, what: () => `needs-admin\n${w.system.dump()}` },
    );
    assert.ok(status.lastError?.fix);
    const lines = w.system.logs.filter((l) => l.service === "imap-poller").map((l) => l.line);
    assert.ok(lines.some((l) => l.includes("asking token-service for a fresh one")), "one fresh token was asked for");
    assert.ok(w.system.logs.some((l) => l.service === "token-service" && l.line.includes("the server rejected a token")));
  } finally {
    await w.oauth.grant(MAILBOX, APP_ID);
  }
});

test("imapflow logs in with OAUTHBEARER when Dovecot offers it too, using token-service's token", async () => {
  // The XOAUTH2-only profile above is the production path; this checks the other mechanism works
  // with the same tokens, on a second listener configuration of the same world.
  const { startDovecot, dovecotOAuth2 } = await import("@postroom/testkit");
  const profile = await dovecotOAuth2({ introspectionUrl: w.idp.info.introspectionUrl, caCertPath: w.idp.info.caCertPath, mechanisms: ["xoauth2", "oauthbearer"], grants: { [MAILBOX]: [APP_ID] } });
  const dovecot = await startDovecot({ users: [{ user: MAILBOX, password: FIXTURE_PASSWORD }], authMechanisms: profile.authMechanisms, extraConfig: profile.extraConfig });
  try {
    const c = await new CredentialClient(w.nc, w.names).get("acme", "support", "imap");
    if (c.mechanism !== "XOAUTH2") throw new Error("expected an OAuth credential");
    const client = new ImapFlow({ host: dovecot.info.host, port: dovecot.info.imapPort, secure: false, doSTARTTLS: false, auth: { user: c.username, accessToken: c.accessToken }, logger: false });
    await client.connect();
    await client.mailboxOpen("INBOX");
    await client.logout();
    assert.match(await dovecot.readLog(), /Login: user=<support@acme\.test>, method=OAUTHBEARER/);
  } finally {
    await dovecot.stop();
    await profile.dir.remove();
  }
});

test("no secret value or access token appears in any service log, the Dovecot or Postfix log, or the NATS traffic of this run", async () => {
  await w.nc.flush();
  const logs = [...w.system.logs.map((l) => l.line), await w.dovecot.readLog(), await import("node:fs/promises").then((fs) => fs.readFile(w.postfix.info.logPath, "utf8"))];
  assert.ok(traffic.length > 100, `${traffic.length} NATS messages captured`);
  for (const secret of [CLIENT_SECRET, FIXTURE_PASSWORD]) {
    assert.ok(!logs.some((l) => l.includes(secret)), "a secret is in a log");
    assert.ok(!traffic.some((t) => t.includes(secret)), "a secret is in the NATS traffic");
  }
  // Credential replies are sealed to the requesting process: the tokens token-service handed out
  // cross the bus only inside sealed boxes.
  assert.ok(w.idp.issuedTokens.length >= 8, `${w.idp.issuedTokens.length} tokens issued`);
  for (const token of w.idp.issuedTokens) assert.ok(!traffic.some((t) => t.includes(token)), "an access token is in the NATS traffic");
  assert.ok(traffic.some((t) => t.startsWith("_INBOX.") && t.includes('"sealed"')), "the credential replies were captured, sealed");
});
