import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { MailSent } from "@postroom/contracts";
import { jetStreamOf, publishJson } from "@postroom/nats-kit";
import { buildMailCorpus, waitFor } from "@postroom/testkit";
import { Harness } from "./test-harness.js";

let h: Harness;

before(async () => {
  h = await Harness.create("archiver", (c) => {
    // The corpus is one sender's mail delivered at once: not what the loop breaker is for (loop-breaker.test.ts).
    c.tenants![0]!.classification = { loopBreaker: { maxMessages: 1000 } };
    // A second mailbox with retention, sharing the archive folder.
    c.tenants![0]!.mailboxes!.push({
      id: "history",
      address: "history@acme.test",
      inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" },
      auth: { type: "password", password: "env:UNUSED" },
      archive: { retentionDays: 30 },
    });
  });
  await h.startArchiver();
});

after(async () => {
  await h?.close();
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;

type MessageDbRow = {
  id: string;
  archive_path: string;
  subject: string;
  text_body: string | null;
  html_body: string | null;
  rfc_message_id: string;
  parse_error: string | null;
  is_auto_reply: boolean;
  is_bounce: boolean;
  is_loop: boolean;
  size: string;
  sha256: string;
};

describe("the varied corpus", () => {
  const corpus = buildMailCorpus();
  const keys = new Map<string, string>();

  before(async () => {
    let uid = 1;
    for (const m of corpus) keys.set(m.name, await h.deliver(m.raw, { uid: uid++ }));
    await waitFor(async () => (await h.count()) === corpus.length, { timeoutMs: 90_000, intervalMs: 200, what: `${corpus.length} corpus messages archived` });
  });

  test("the corpus has at least 30 messages in at least 8 declared charsets besides UTF-8 and ASCII", () => {
    assert.ok(corpus.length >= 30, `${corpus.length} messages`);
    const charsets = new Set(corpus.map((m) => /charset="?([^";\r\n]+)/i.exec(m.raw.subarray(0, 2000).toString("latin1"))?.[1]?.toLowerCase()).filter((c) => c && c !== "utf-8" && c !== "us-ascii"));
    assert.ok(charsets.size >= 8, [...charsets].join(", "));
    assert.ok(corpus.some((m) => m.raw.length > 25 * 1024 * 1024), "one message carries a 25 MB attachment");
  });

  test("every archived .eml is byte-identical to what was delivered, and its row has the same size and SHA-256", async () => {
    for (const m of corpus) {
      const [row] = await h.rows<MessageDbRow>("SELECT * FROM messages WHERE message_key = $1", [keys.get(m.name)]);
      assert.ok(row, `${m.name} has a row`);
      const eml = await readFile(join(row.archive_path, "message.eml"));
      assert.ok(eml.equals(m.raw), `${m.name}: archived .eml is byte-identical`);
      assert.equal(row.sha256, sha(m.raw), m.name);
      assert.equal(Number(row.size), m.raw.length, m.name);
    }
  });

  test("every MIME part is kept as its own file under a safe, unique name, with the original name in the row and in meta.json", async () => {
    for (const m of corpus) {
      const [row] = await h.rows<MessageDbRow>("SELECT * FROM messages WHERE message_key = $1", [keys.get(m.name)]);
      const parts = await h.rows<{ original_name: string | null; stored_name: string; size: string; sha256: string }>(
        "SELECT original_name, stored_name, size, sha256 FROM attachments WHERE message_id = $1 ORDER BY part_index",
        [row!.id],
      );
      if (m.expect.parts !== undefined) assert.equal(parts.length, m.expect.parts, `${m.name}: part count`);
      if (m.expect.attachmentNames) assert.deepEqual(parts.map((p) => p.original_name), m.expect.attachmentNames, `${m.name}: original names kept`);
      const onDisk = (await readdir(join(row!.archive_path, "parts"))).sort();
      assert.deepEqual(onDisk, parts.map((p) => p.stored_name).sort(), `${m.name}: one file per part, nothing else`);
      const lower = new Set<string>();
      for (const p of parts) {
        const name = p.stored_name;
        // eslint-disable-next-line no-control-regex -- control characters are what must not be there
        assert.ok(!/[/\\\u0000-\u001f\u007f]/.test(name), `${m.name}: ${JSON.stringify(name)} has no separators or control characters`);
        assert.ok(!name.startsWith("."), `${m.name}: ${name} is not hidden or relative`);
        assert.ok(!DEVICE.test(name), `${m.name}: ${name} is not a device name`);
        assert.ok(Buffer.byteLength(name) <= 120, `${m.name}: ${name} is at most 120 bytes`);
        assert.ok(!lower.has(name.toLowerCase()), `${m.name}: ${name} is unique (case-insensitively)`);
        lower.add(name.toLowerCase());
        const file = await readFile(join(row!.archive_path, "parts", name));
        assert.equal(sha(file), p.sha256, `${m.name}: ${name} content matches its row`);
        assert.equal(file.length, Number(p.size));
      }
      const meta = JSON.parse(await readFile(join(row!.archive_path, "meta.json"), "utf8")) as { sha256: string; attachments: { originalName: string | null; storedName: string }[] };
      assert.equal(meta.sha256, sha(m.raw));
      assert.deepEqual(meta.attachments.map((a) => a.originalName), parts.map((p) => p.original_name), `${m.name}: meta.json keeps the original names`);
    }
  });

  test("subjects and bodies are decoded with their declared charsets, HTML is kept as received", async () => {
    for (const m of corpus) {
      const [row] = await h.rows<MessageDbRow>("SELECT * FROM messages WHERE message_key = $1", [keys.get(m.name)]);
      if (m.expect.subject !== undefined) assert.equal(row!.subject, m.expect.subject, `${m.name}: subject`);
      if (m.expect.text !== undefined) assert.ok((row!.text_body ?? "").includes(m.expect.text), `${m.name}: text ${JSON.stringify(row!.text_body)}`);
      if (m.expect.html !== undefined) assert.ok((row!.html_body ?? "").includes(m.expect.html), `${m.name}: html ${JSON.stringify(row!.html_body)}`);
    }
  });

  test("auto-replies, bounces and loops are flagged; a message without Message-ID gets a stable derived one", async () => {
    for (const m of corpus) {
      const [row] = await h.rows<MessageDbRow>("SELECT * FROM messages WHERE message_key = $1", [keys.get(m.name)]);
      for (const [flag, column] of [["autoReply", "is_auto_reply"], ["bounce", "is_bounce"], ["loop", "is_loop"]] as const) {
        if (m.expect[flag] !== undefined) assert.equal(row![column], m.expect[flag], `${m.name}: ${flag}`);
      }
      if (m.expect.noMessageId) assert.equal(row!.rfc_message_id, `<${sha(m.raw).slice(0, 32)}@derived.postroom.invalid>`, m.name);
      else assert.equal(row!.rfc_message_id, `<${m.name}@corpus.example>`, m.name);
    }
  });

  test("broken and hostile messages are archived and confirmed like any other, and nothing is left in staging", async () => {
    const confirmed = new Set(h.confirmations.map((c) => c.messageKey));
    for (const [name, key] of keys) assert.ok(confirmed.has(key), `${name} confirmed with mail.archived`);
    assert.deepEqual(await readdir(join(h.archiveRoot, ".tmp")), []);
  });
});

test("delivering the same message three times yields one row, one set of files and three confirmations", async () => {
  const raw = buildMailCorpus({ bigAttachmentBytes: 0 }).find((m) => m.name === "nested-related-mixed")!.raw;
  const uid = 5000;
  const key = await h.deliver(raw, { uid });
  await waitFor(() => h.confirmations.filter((c) => c.messageKey === key).length === 1, { timeoutMs: 20_000, what: "first confirmation" });
  // Later deliveries of the same message: a poller that fetched it again after a crash.
  await h.deliver(raw, { uid, publishId: `${key}#again-1` });
  await h.deliver(raw, { uid, publishId: `${key}#again-2` });
  const confirmations = await waitFor(() => {
    const c = h.confirmations.filter((x) => x.messageKey === key);
    return c.length === 3 && c;
  }, { timeoutMs: 20_000, what: "three confirmations" });
  assert.equal(new Set(confirmations.map((c) => c.messageId)).size, 1, "all three name the same row");
  assert.equal(await h.count("SELECT count(*) AS n FROM messages WHERE message_key = $1", [key]), 1);
  assert.equal(await h.count("SELECT count(*) AS n FROM audit_events WHERE ref = $1 AND kind = 'message.archived'", [key]), 1);
  const path = confirmations[0]!.archivePath;
  const day = join(path, "..");
  assert.deepEqual((await readdir(day)).filter((d) => d.endsWith(`-${uid}`)), [`7-${uid}`], "one message folder");
  assert.deepEqual((await readdir(path)).sort(), ["message.eml", "meta.json", "parts"]);
  assert.equal((await readdir(join(path, "parts"))).length, 2);
  assert.equal(confirmations.length, 3);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(h.confirmations.filter((c) => c.messageKey === key).length, 3, "and no more");
});

test("retention purges the files of messages older than the mailbox's retention days, keeps their rows marked purged, and reports it", async () => {
  const raw = buildMailCorpus({ bigAttachmentBytes: 0 }).find((m) => m.name === "duplicate-names")!.raw;
  const old = await h.deliver(raw, { uid: 7000, mailbox: "history", receivedAt: new Date(Date.now() - 40 * 24 * 3600_000) });
  const fresh = await h.deliver(raw, { uid: 7001, mailbox: "history", receivedAt: new Date(Date.now() - 2 * 24 * 3600_000) });
  const keep = await h.deliver(raw, { uid: 7002, receivedAt: new Date(Date.now() - 400 * 24 * 3600_000) }); // mailbox "support": no retention
  await waitFor(async () => (await h.count("SELECT count(*) AS n FROM messages WHERE message_key = ANY($1)", [[old, fresh, keep]])) === 3, { timeoutMs: 20_000, what: "three archived" });
  const paths = new Map((await h.rows<{ message_key: string; archive_path: string }>("SELECT message_key, archive_path FROM messages WHERE message_key = ANY($1)", [[old, fresh, keep]])).map((r) => [r.message_key, r.archive_path]));
  const oldBytes = (await stat(join(paths.get(old)!, "message.eml"))).size;

  const reports = await h.archiver!.purgeNow();
  const history = reports.find((r) => r.mailbox === "history")!;
  assert.equal(history.messages, 1);
  assert.ok(history.bytes >= oldBytes, `reported ${history.bytes} bytes`);
  assert.equal(reports.some((r) => r.mailbox === "support"), false, "a mailbox without retentionDays is never purged");

  await assert.rejects(stat(paths.get(old)!), /ENOENT/, "the old message's folder is gone");
  await stat(join(paths.get(fresh)!, "message.eml"));
  await stat(join(paths.get(keep)!, "message.eml"));
  const rows = await h.rows<{ message_key: string; purged: boolean; subject: string }>(
    "SELECT message_key, purged_at IS NOT NULL AS purged, subject FROM messages WHERE message_key = ANY($1)",
    [[old, fresh, keep]],
  );
  assert.deepEqual(Object.fromEntries(rows.map((r) => [r.message_key, r.purged])), { [old]: true, [fresh]: false, [keep]: false });
  assert.equal(rows.find((r) => r.message_key === old)!.subject, "corpus duplicate-names", "the row and its history stay");
  assert.equal(await h.count("SELECT count(*) AS n FROM audit_events WHERE ref = $1 AND kind = 'message.purged'", [old]), 1);
  assert.equal((await h.archiver!.purgeNow()).find((r) => r.mailbox === "history")!.messages, 0, "a second run finds nothing");
});

test("a reply archived before the message it answers joins that message's conversation when it arrives", async () => {
  const mail = (id: string, extra: string[]) =>
    Buffer.from([`From: ann@customer.example`, `Subject: late original`, `Message-ID: <${id}@customer.example>`, ...extra, "", "text", ""].join("\r\n"));
  // The answer (and an answer to the answer) come first, the original last: a backlog out of order.
  const answer = await h.deliver(mail("late-answer", ["In-Reply-To: <late-original@customer.example>"]), { uid: 8001 });
  const second = await h.deliver(mail("late-second", ["References: <late-answer@customer.example>"]), { uid: 8002 });
  await waitFor(async () => (await h.count("SELECT count(*) AS n FROM messages WHERE message_key = ANY($1)", [[answer, second]])) === 2, { timeoutMs: 20_000, what: "answers archived" });
  const unrelated = await h.deliver(mail("late-unrelated", ["In-Reply-To: <someone-else@customer.example>"]), { uid: 8003 });
  const original = await h.deliver(mail("late-original", []), { uid: 8004 });
  await waitFor(async () => (await h.count("SELECT count(*) AS n FROM messages WHERE message_key = ANY($1)", [[unrelated, original]])) === 2, { timeoutMs: 20_000, what: "original archived" });
  const rows = await h.rows<{ message_key: string; conversation_id: string }>("SELECT message_key, conversation_id FROM messages WHERE message_key = ANY($1)", [[answer, second, unrelated, original]]);
  const conv = Object.fromEntries(rows.map((r) => [r.message_key, r.conversation_id]));
  assert.equal(conv[answer], conv[original]);
  assert.equal(conv[second], conv[original], "and what was threaded to the answer comes along");
  assert.notEqual(conv[unrelated], conv[original]);
});

test("a sent message is archived from the bytes inside mail.sent when they are there, and from the object store when not", async () => {
  const sentMail = (n: number) =>
    Buffer.from([`From: support@acme.test`, `To: ann@customer.example`, `Subject: Re: sent ${n}`, `Message-ID: <sent-${n}@acme.test>`, "", `answer ${n}`, ""].join("\r\n"));
  const publish = async (n: number, inline: boolean) => {
    const raw = sentMail(n);
    const name = `acme/support/sent/cmd-${n}`;
    // Inline: no object at all under the name, so only the event's own bytes can be archived.
    if (!inline) await h.raw.putBlob({ name }, raw);
    const event: MailSent = {
      version: "v1",
      commandId: `cmd-${n}`,
      tenant: "acme",
      mailbox: "support",
      rfcMessageId: `<sent-${n}@acme.test>`,
      inReplyTo: null,
      references: [],
      raw: { bucket: h.names.buckets.rawMail, name, size: raw.length, sha256: createHash("sha256").update(raw).digest("hex") },
      ...(inline ? { rawInline: raw.toString("base64") } : {}),
      envelope: { from: "support@acme.test", to: ["ann@customer.example"] },
      serverResponse: "250 2.0.0 Ok",
      sentAt: new Date().toISOString(),
    };
    await publishJson(jetStreamOf(h.nc), h.names.subjects.mailSent("acme", "support"), event, { msgId: `cmd-${n}#sent` });
    return raw;
  };
  const inline = await publish(1, true);
  const stored = await publish(2, false);
  const keys = ["acme/support/sent/cmd-1", "acme/support/sent/cmd-2"];
  await waitFor(async () => (await h.count("SELECT count(*) AS n FROM messages WHERE message_key = ANY($1)", [keys])) === 2, { timeoutMs: 30_000, what: "both sent messages archived" });
  const rows = await h.rows<{ message_key: string; archive_path: string; direction: string }>("SELECT message_key, archive_path, direction FROM messages WHERE message_key = ANY($1) ORDER BY message_key", [keys]);
  assert.deepEqual(rows.map((r) => r.direction), ["outbound", "outbound"]);
  assert.deepEqual(await readFile(join(rows[0]!.archive_path, "message.eml")), inline);
  assert.deepEqual(await readFile(join(rows[1]!.archive_path, "message.eml")), stored);
});
