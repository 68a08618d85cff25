import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { startDovecot, type DovecotServer } from "@postroom/testkit";
import { DotUnstuffer, Pop3Client, Pop3Error, ServerLineEnd } from "./pop3-client.js";

const USER = "pop@example.test";
const PASSWORD = "pop pass: with spaces";
let dovecot: DovecotServer;

before(async () => {
  dovecot = await startDovecot({ users: [{ user: USER, password: PASSWORD }] });
});
after(async () => {
  await dovecot?.stop();
});

function client(): Pop3Client {
  return new Pop3Client({ host: dovecot.info.host, port: dovecot.info.pop3Port, tls: "none", timeoutMs: 10_000 });
}

async function read(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** A message whose lines start with dots, including a lone "." and "..", in every position. */
function dotty(lines: number): Buffer {
  const body = Array.from({ length: lines }, (_, i) => (i % 7 === 0 ? "." : i % 5 === 0 ? ".." : i % 3 === 0 ? `.leading dot ${i}` : `line ${i} ${"x".repeat(i % 90)}`));
  return Buffer.from(`From: a@example.test\r\nTo: ${USER}\r\nSubject: dots\r\nMessage-ID: <dots-${lines}@example.test>\r\n\r\n${body.join("\r\n")}\r\n`);
}

test("RETR returns the exact bytes, dot-stuffing undone across chunk boundaries, and UIDL lists each message", async () => {
  const small = dotty(50);
  const big = dotty(60_000); // a few MB: many socket chunks, dots at arbitrary boundaries
  await dovecot.appendMessage(USER, small);
  await dovecot.appendMessage(USER, big);
  const c = client();
  assert.match(await c.connect(), /ready/i);
  await c.login(USER, PASSWORD);
  const listing = await c.listing();
  assert.equal(listing.length, 2);
  assert.notEqual(listing[0]!.uidl, listing[1]!.uidl);
  const first = await read(await c.retr(1));
  const second = await read(await c.retr(2));
  assert.equal(first.toString("latin1"), small.toString("latin1"));
  assert.equal(createHash("sha256").update(second).digest("hex"), createHash("sha256").update(big).digest("hex"));
  // The session still works after a streamed RETR.
  assert.equal((await c.listing()).length, 2);
  await c.quit();
});

test("a wrong password is refused with the server's own text, marked as an authentication failure", async () => {
  const c = client();
  await c.connect();
  await assert.rejects(c.login(USER, "wrong"), (e: unknown) => {
    assert.ok(e instanceof Pop3Error);
    assert.equal(e.authenticationFailed, true);
    assert.match(e.responseText ?? "", /Authentication failed/i);
    assert.doesNotMatch(e.message, /wrong/, "the password never appears in the error");
    return true;
  });
  c.close();
});

test("DELE takes effect only when QUIT succeeds; a dropped session deletes nothing", async () => {
  const before = await countMessages();
  const dropped = client();
  await dropped.connect();
  await dropped.login(USER, PASSWORD);
  await dropped.dele(1);
  dropped.close();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await countMessages(), before, "nothing deleted without QUIT");
  const committed = client();
  await committed.connect();
  await committed.login(USER, PASSWORD);
  await committed.dele(1);
  await committed.quit();
  assert.equal(await countMessages(), before - 1);
});

test("CAPA lists what the server offers", async () => {
  const c = client();
  await c.connect();
  const capa = await c.capa();
  assert.ok(capa.includes("UIDL"), capa.join(","));
  await c.quit();
});

test("a server that says nothing hits the deadline instead of hanging", async () => {
  const { createServer } = await import("node:net");
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const port = (silent.address() as { port: number }).port;
  const c = new Pop3Client({ host: "127.0.0.1", port, tls: "none", timeoutMs: 300 });
  const started = Date.now();
  await assert.rejects(c.connect(), /sent nothing for 300 ms/);
  assert.ok(Date.now() - started < 3_000);
  c.close();
  silent.close();
});

async function countMessages(): Promise<number> {
  const out = await dovecot.doveadm(["mailbox", "status", "-u", USER, "messages", "INBOX"]);
  return Number(/messages=(\d+)/.exec(out)?.[1]);
}

test("dot-unstuffing gives the same bytes wherever the chunks are cut, and stops at the terminating line", () => {
  const message = Buffer.from(".starts with a dot\r\nplain\r\n..two\r\n.\r\r\n...\r\nend.\r\n. \r\nlast\r\n");
  const stuffed = Buffer.concat([
    Buffer.from(message.toString("latin1").replace(/^\./gm, "..")),
    Buffer.from(".\r\n+OK next reply\r\n"),
  ]);
  const check = (chunks: Buffer[]) => {
    const u = new DotUnstuffer();
    const got: Buffer[] = [];
    let rest: Buffer | undefined;
    for (const c of chunks) {
      assert.equal(rest, undefined, "nothing is fed after the end");
      const r = u.feed(c);
      got.push(...r.parts);
      rest = r.rest;
    }
    assert.equal(Buffer.concat(got).toString("latin1"), message.toString("latin1"), `cut at ${chunks.map((c) => c.length).join("+")}`);
    assert.equal(rest?.toString("latin1"), "+OK next reply\r\n");
  };
  for (let i = 1; i < stuffed.length - 18; i++) {
    for (let j = i + 1; j <= stuffed.length - 18; j++) {
      check([stuffed.subarray(0, i), stuffed.subarray(i, j), stuffed.subarray(j)]);
    }
  }
  // One byte at a time too.
  const u = new DotUnstuffer();
  const got: Buffer[] = [];
  let rest: Buffer | undefined;
  for (let i = 0; i < stuffed.length && rest === undefined; i++) {
    const r = u.feed(stuffed.subarray(i, i + 1));
    got.push(...r.parts);
    rest = r.rest;
  }
  assert.equal(Buffer.concat(got).toString("latin1"), message.toString("latin1"));
  assert.equal(rest?.length, 0, "the terminator was the last byte fed");
});

test("a message without a final line break comes out of RETR as it was stored: the CRLF Dovecot adds is dropped by its LIST size", async () => {
  const cut = Buffer.from(`From: a@example.test\r\nTo: ${USER}\r\nSubject: cut off\r\nMessage-ID: <cut@example.test>\r\n\r\nbase64 that stops mid-li`);
  const whole = Buffer.from(`From: a@example.test\r\nTo: ${USER}\r\nSubject: whole\r\nMessage-ID: <whole@example.test>\r\n\r\nends with a line break\r\n`);
  await dovecot.appendMessage(USER, cut);
  await dovecot.appendMessage(USER, whole);
  const c = client();
  await c.connect();
  await c.login(USER, PASSWORD);
  const listing = await c.listing();
  const byId = async (id: string) => {
    for (const m of listing) {
      const bytes = await read(await c.retr(m.n, m.size));
      if (bytes.includes(id)) return { bytes, m, plain: await read(await c.retr(m.n)) };
    }
    throw new Error(`${id} not in the mailbox`);
  };
  const a = await byId("<cut@example.test>");
  assert.equal(a.m.size, cut.length, "LIST gives the stored size");
  assert.equal(a.plain.length, cut.length + 2, "RETR alone gives two bytes more (the server's CRLF)");
  assert.ok(a.bytes.equals(cut), "with the listed size: exactly what was stored");
  const b = await byId("<whole@example.test>");
  assert.ok(b.bytes.equals(whole), "a message that ends with CRLF keeps it");
  await c.quit();
});

test("the server's line end is dropped wherever the chunks are cut, and only when it is exactly the two extra bytes", () => {
  const run = (size: number | undefined, chunks: Buffer[]) => {
    const t = new ServerLineEnd(size);
    const out = chunks.flatMap((c) => t.pass([c]));
    return Buffer.concat([...out, ...t.end()]).toString("latin1");
  };
  const body = "line one\r\nno end";
  const sent = Buffer.from(`${body}\r\n`);
  for (let i = 0; i <= sent.length; i++) {
    for (let j = i; j <= sent.length; j++) {
      const chunks = [sent.subarray(0, i), sent.subarray(i, j), sent.subarray(j)];
      assert.equal(run(body.length, chunks), body, `cut at ${i}/${j}`);
      assert.equal(run(sent.length, chunks), `${body}\r\n`, `a message listed with its CRLF keeps it (cut at ${i}/${j})`);
      assert.equal(run(undefined, chunks), `${body}\r\n`, "without a listed size nothing is dropped");
    }
  }
  assert.equal(run(body.length - 1, [sent]), `${body}\r\n`, "a size off by other than two drops nothing");
  const lf = Buffer.from("ends in a bare LF\n\n");
  assert.equal(run(lf.length - 2, [lf]), "ends in a bare LF\n\n", "only CRLF is the server's");
});
