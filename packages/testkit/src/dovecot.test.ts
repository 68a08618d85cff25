import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { ImapFlow } from "imapflow";
import { readGreeting, startDovecot, type DovecotServer } from "@postroom/mail-servers";
import { LineSocket } from "./line-socket.js";

const USER = "support@example.test";
const PASSWORD = "s3cret:with colon";

function message(subject: string, body = "Hello from the testkit."): Buffer {
  return Buffer.from(
    [
      "From: Customer <customer@example.org>",
      `To: ${USER}`,
      `Subject: ${subject}`,
      "Message-ID: <" + subject.replace(/\W/g, "") + "@example.org>",
      "Date: Fri, 28 Nov 2025 10:00:00 +0000",
      "",
      body,
      "",
    ].join("\r\n"),
  );
}

async function canLogin(dovecot: DovecotServer, user: string, password: string): Promise<boolean> {
  const client = new ImapFlow({
    host: dovecot.info.host,
    port: dovecot.info.imapPort,
    secure: false,
    doSTARTTLS: false,
    auth: { user, pass: password },
    logger: false,
  });
  try {
    await client.connect();
    await client.logout();
    return true;
  } catch {
    client.close();
    return false;
  }
}

describe("startDovecot", () => {
  let dovecot: DovecotServer;

  before(async () => {
    dovecot = await startDovecot({ users: [{ user: USER, password: PASSWORD }], ssl: true, lmtp: true });
  });
  after(async () => {
    await dovecot?.stop();
  });

  test("a message appended over IMAP reads back byte for byte over IMAP and over POP3", async () => {
    const raw = message("Round trip");
    const { uid, uidValidity } = await dovecot.appendMessage(USER, raw, { flags: ["\\Flagged"] });
    assert.ok(uid > 0);
    assert.equal(uidValidity, await dovecot.uidValidity(USER));

    const fetched = await dovecot.withImap(USER, async (client) => {
      const lock = await client.getMailboxLock("INBOX");
      try {
        return await client.fetchOne(String(uid), { source: true }, { uid: true });
      } finally {
        lock.release();
      }
    });
    assert.ok(fetched !== false);
    assert.deepEqual(fetched.source, raw);

    const pop = await LineSocket.connect(dovecot.info.host, dovecot.info.pop3Port);
    try {
      assert.match(await pop.readLine(), /^\+OK/);
      assert.match(await pop.command(`USER ${USER}`), /^\+OK/);
      assert.match(await pop.command(`PASS ${PASSWORD}`), /^\+OK/);
      assert.match(await pop.command("RETR 1"), /^\+OK/);
      const lines = await pop.readUntilDot();
      assert.ok(lines.includes("Subject: Round trip"), lines.join("\n"));
      assert.match(await pop.command("QUIT"), /^\+OK/);
    } finally {
      pop.close();
    }
  });

  test("a wrong password is refused at once over IMAP and POP3, and the log records it", async () => {
    const started = Date.now();
    assert.equal(await canLogin(dovecot, USER, "wrong"), false);
    assert.equal(await canLogin(dovecot, USER, "wrong again"), false);
    const pop = await LineSocket.connect(dovecot.info.host, dovecot.info.pop3Port);
    try {
      await pop.readLine();
      await pop.command(`USER ${USER}`);
      assert.match(await pop.command("PASS wrong"), /^-ERR/);
    } finally {
      pop.close();
    }
    // No auth_failure_delay and no anvil penalty. Dovecot still answers failures from a queue it
    // checks every 500 ms (AUTH_FAILURE_DELAY_CHECK_MSECS), so about 0.5 s each; with the defaults
    // these three would take 2 + 4 + 8 s.
    assert.ok(Date.now() - started < 3_000, `took ${Date.now() - started} ms`);
    assert.equal(await canLogin(dovecot, USER, PASSWORD), true, "a right password still works after failures");
    const log = await dovecot.readLog();
    assert.match(log, /imap-login: Info: Disconnected.*auth failed/);
    assert.match(log, /imap-login: Info: Login: user=<support@example\.test>/);
  });

  test("flagsOf maps each UID to its flags, without \\Recent", async () => {
    const a = await dovecot.appendMessage(USER, message("Flags A"), { folder: "Flags", flags: ["\\Seen"] });
    const b = await dovecot.appendMessage(USER, message("Flags B"), { folder: "Flags", flags: ["\\Answered", "$Forwarded"] });
    const c = await dovecot.appendMessage(USER, message("Flags C"), { folder: "Flags" });
    const flags = await dovecot.flagsOf(USER, "Flags");
    assert.deepEqual(
      flags,
      new Map([
        [a.uid, ["\\Seen"]],
        [b.uid, ["$Forwarded", "\\Answered"]],
        [c.uid, []],
      ]),
    );
  });

  test("users added and passwords changed at runtime take effect for new logins", async () => {
    await dovecot.setUser("sales@example.test", "first");
    assert.equal(await canLogin(dovecot, "sales@example.test", "first"), true);
    // Same length on purpose: Dovecot must notice the change by mtime, not by size.
    await dovecot.setUser("sales@example.test", "secnd");
    assert.equal(await canLogin(dovecot, "sales@example.test", "first"), false);
    assert.equal(await canLogin(dovecot, "sales@example.test", "secnd"), true);
    await dovecot.removeUser("sales@example.test");
    assert.equal(await canLogin(dovecot, "sales@example.test", "secnd"), false);
  });

  test("recreateFolder gives INBOX and other folders a new UIDVALIDITY and keeps their messages", async () => {
    await dovecot.appendMessage(USER, message("Keep me"), { folder: "Archive", flags: ["\\Seen"] });
    const archive = await dovecot.recreateFolder(USER, "Archive");
    assert.notEqual(archive.after, archive.before);
    assert.deepEqual([...(await dovecot.flagsOf(USER, "Archive")).values()], [["\\Seen"]]);

    const inboxBefore = [...(await dovecot.flagsOf(USER)).entries()];
    assert.ok(inboxBefore.length > 0);
    const inbox = await dovecot.recreateFolder(USER, "INBOX");
    assert.notEqual(inbox.after, inbox.before);
    assert.equal(await dovecot.uidValidity(USER), inbox.after);
    const inboxAfter = [...(await dovecot.flagsOf(USER)).entries()];
    assert.deepEqual(
      inboxAfter.map(([, f]) => f),
      inboxBefore.map(([, f]) => f),
    );

    const emptied = await dovecot.recreateFolder(USER, "Archive", { keepMessages: false });
    assert.notEqual(emptied.after, emptied.before);
    assert.equal((await dovecot.flagsOf(USER, "Archive")).size, 0);
  });

  test("IMAPS and POP3S answer with the self-signed certificate", async () => {
    const ca = readFileSync(dovecot.info.caCertPath!, "utf8");
    for (const [port, greeting] of [
      [dovecot.info.imapsPort!, /^\* OK/],
      [dovecot.info.pop3sPort!, /^\+OK/],
    ] as const) {
      const socket = await LineSocket.connect(dovecot.info.host, port, { tls: true, ca });
      try {
        assert.match(await socket.readLine(), greeting);
      } finally {
        socket.close();
      }
    }
  });

  test("LMTP delivers a message into the user's INBOX", async () => {
    const lmtp = await LineSocket.connect(dovecot.info.host, dovecot.info.lmtpPort!);
    try {
      assert.match((await lmtp.readReply()).at(-1)!, /^220/);
      lmtp.send("LHLO testkit");
      assert.match((await lmtp.readReply()).at(-1)!, /^250 /);
      assert.match(await lmtp.command("MAIL FROM:<customer@example.org>"), /^250/);
      assert.match(await lmtp.command(`RCPT TO:<${USER}>`), /^250/);
      assert.match(await lmtp.command("DATA"), /^354/);
      lmtp.send(message("Via LMTP").toString("utf8").replace(/\r\n$/, ""));
      assert.match(await lmtp.command("."), /^250/);
      lmtp.send("QUIT");
    } finally {
      lmtp.close();
    }
    const subjects = await dovecot.withImap(USER, async (client) => {
      const lock = await client.getMailboxLock("INBOX");
      try {
        return (await client.fetchAll("1:*", { envelope: true })).map((m) => m.envelope?.subject);
      } finally {
        lock.release();
      }
    });
    assert.ok(subjects.includes("Via LMTP"), JSON.stringify(subjects));
  });
});

test("stop() ends Dovecot and removes its folder", async () => {
  const dovecot = await startDovecot({ users: [{ user: USER, password: PASSWORD }] });
  const { dir, imapPort, host } = dovecot.info;
  assert.ok(existsSync(dir));
  await dovecot.stop();
  assert.equal(existsSync(dir), false);
  await assert.rejects(readGreeting(host, imapPort, 500));
  await dovecot.stop(); // twice is fine
});
