import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { LineSocket } from "./line-socket.js";
import { startSmtpSink, type SmtpSink } from "./smtp-sink.js";

const RAW = ["From: agent@example.test", "To: customer@example.org", "Subject: Re: your order", "", "..dot-stuffed line", "Thanks!"].join("\r\n");

/** One SMTP transaction by hand; returns the code of every reply in order. */
async function send(
  sink: SmtpSink,
  options: { auth?: { username: string; password: string }; from?: string; to?: string[]; raw?: string } = {},
): Promise<number[]> {
  const codes: number[] = [];
  const smtp = await LineSocket.connect(sink.info.host, sink.info.port);
  const reply = async () => {
    const lines = await smtp.readReply();
    const code = Number(lines.at(-1)!.slice(0, 3));
    codes.push(code);
    return code;
  };
  try {
    await reply();
    smtp.send("EHLO testkit");
    await reply();
    if (options.auth !== undefined) {
      smtp.send(`AUTH PLAIN ${Buffer.from(`\0${options.auth.username}\0${options.auth.password}`).toString("base64")}`);
      if ((await reply()) !== 235) return codes;
    }
    smtp.send(`MAIL FROM:<${options.from ?? "agent@example.test"}>`);
    if ((await reply()) !== 250) return codes;
    let accepted = 0;
    for (const to of options.to ?? ["customer@example.org"]) {
      smtp.send(`RCPT TO:<${to}>`);
      if ((await reply()) === 250) accepted += 1;
    }
    if (accepted === 0) return codes;
    smtp.send("DATA");
    if ((await reply()) !== 354) return codes;
    smtp.send(`${options.raw ?? RAW}\r\n.`);
    await reply();
    smtp.send("QUIT");
    await reply();
    return codes;
  } finally {
    smtp.close();
  }
}

describe("startSmtpSink without AUTH", () => {
  let sink: SmtpSink;
  before(async () => {
    sink = await startSmtpSink();
  });
  after(async () => {
    await sink?.stop();
  });

  test("an accepted message is recorded with its envelope and exact bytes", async () => {
    sink.reset();
    const codes = await send(sink, { to: ["a@example.org", "b@example.org"] });
    assert.deepEqual(codes, [220, 250, 250, 250, 250, 354, 250, 221]);
    const [message] = await sink.waitForMessages(1, 2_000);
    assert.deepEqual(message!.envelope, { mailFrom: "agent@example.test", rcptTo: ["a@example.org", "b@example.org"] });
    // Dot-stuffing undone, CRLF kept, final CRLF before "." belongs to the message.
    assert.equal(message!.raw.toString("utf8"), RAW.replace("..dot", ".dot") + "\r\n");
    assert.equal(message!.user, undefined);
  });

  test("scripted replies: DATA refused with 451 twice, then accepted", async () => {
    sink.reset();
    sink.replyWith("data", 451, { code: 451, message: "4.3.2 Try again later" });
    assert.equal((await send(sink)).at(-2), 451);
    assert.equal((await send(sink)).at(-2), 451);
    assert.equal(sink.messages.length, 0);
    assert.equal((await send(sink)).at(-2), 250);
    await sink.waitForMessages(1, 2_000);
    assert.deepEqual(
      sink.attempts.filter((a) => a.stage === "data").map((a) => a.code),
      [451, 451, 250],
    );
  });

  test("scripted replies: a recipient refused with 550 never receives the message", async () => {
    sink.reset();
    sink.replyWith("rcpt", { code: 550, message: "5.1.1 User unknown" });
    const codes = await send(sink, { to: ["gone@example.org", "here@example.org"] });
    assert.deepEqual(codes.slice(3, 5), [550, 250]);
    const [message] = await sink.waitForMessages(1, 2_000);
    assert.deepEqual(message!.envelope.rcptTo, ["here@example.org"]);
  });

  test("waitForMessages says how many arrived when it times out", async () => {
    sink.reset();
    await assert.rejects(sink.waitForMessages(1, 100), /1 message\(s\) in the SMTP sink \(have 0\)/);
  });
});

describe("startSmtpSink with AUTH", () => {
  let sink: SmtpSink;
  before(async () => {
    sink = await startSmtpSink({
      users: [{ username: "support@example.test", password: "app-password" }],
      // A hook sees the envelope: refuse mail from anyone but the logged-in user, like Exchange.
      onReply: (c) => (c.stage === "mail" && c.address !== c.user ? { code: 550, message: "5.7.60 SendAsDenied" } : undefined),
    });
  });
  after(async () => {
    await sink?.stop();
  });

  test("the right password is accepted and the message remembers the user", async () => {
    const auth = { username: "support@example.test", password: "app-password" };
    const codes = await send(sink, { auth, from: "support@example.test" });
    assert.equal(codes[2], 235);
    const [message] = await sink.waitForMessages(1, 2_000);
    assert.equal(message!.user, "support@example.test");
  });

  test("a wrong password gets 535 and sending without AUTH is refused", async () => {
    const codes = await send(sink, { auth: { username: "support@example.test", password: "nope" } });
    assert.equal(codes[2], 535);
    const noAuth = await send(sink, { from: "support@example.test" });
    assert.equal(noAuth[2], 530);
  });

  test("the reply hook refuses sending as someone else", async () => {
    const codes = await send(sink, { auth: { username: "support@example.test", password: "app-password" }, from: "ceo@example.test" });
    assert.equal(codes.at(-1), 550);
  });
});

test("scripted AUTH refusals answer with the given code and text until lifted", async () => {
  const sink = await startSmtpSink({ users: [{ username: "support@acme.test", password: "pw" }] });
  try {
    sink.refuseAuth({ always: { code: 535, message: "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox." } });
    const login = async () => {
      const s = await LineSocket.connect("127.0.0.1", sink.info.port);
      await s.readReply();
      s.send("EHLO client.test");
      await s.readReply();
      const reply = await s.command(`AUTH PLAIN ${Buffer.from("\0support@acme.test\0pw").toString("base64")}`);
      s.close();
      return reply;
    };
    assert.match(String(await login()), /^535 5\.7\.139 Authentication unsuccessful/);
    sink.refuseAuth();
    assert.match(String(await login()), /^235/);
    assert.deepEqual(sink.authAttempts.map((a) => a.code), [535, 235]);
  } finally {
    await sink.stop();
  }
});
