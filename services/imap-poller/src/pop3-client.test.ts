import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { startDovecot, type DovecotServer } from "@postroom/testkit";
import { Pop3Client, Pop3Error } from "./pop3-client.js";

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
