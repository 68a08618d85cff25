// Sending through Microsoft Graph against the fake Graph (real HTTPS, backed by a real Dovecot) and
// the fake identity platform. GraphSender uses node's fetch, which trusts a CA only through
// NODE_EXTRA_CA_CERTS read at start-up, as in production — so each send runs in a child process
// started with the fake platform's CA: this same file, given a job in POSTROOM_GRAPH_SEND_JOB, runs
// the job instead of defining tests and prints what happened as JSON.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Mailbox as MailboxConfig } from "@postroom/config";
import { SendRequested, type Credential } from "@postroom/contracts";
import { startDovecot, startFakeGraph, startFakeIdentityPlatform, stopAll, type DovecotServer, type FakeGraph, type FakeIdentityPlatform } from "@postroom/testkit";
import { retryAfterMs } from "@postroom/runtime";
import { classifyGraphSendError, GraphSender, GraphSendError, graphTarget, type GraphTarget } from "./graph-send.js";
import { buildMessage, compileMessage } from "./sender.js";

/** What the child does: one send (or one removal of the Sent Items copy) with tokens from the fake platform. */
interface Job {
  target: GraphTarget;
  op: "send" | "send-and-remove";
  mime: string;
  rfcMessageId?: string;
  authorityHost: string;
  tenantId: string;
  clientId: string;
  secret: string;
  /** The first token is for this resource instead of Graph (a token Graph refuses). */
  firstResource?: string;
}

/** What the child reports. */
interface Outcome {
  response?: string;
  removed?: number;
  error?: { name: string; message: string; verdict: GraphSendError["verdict"]; responseCode?: number; graphCode: string; retryAfterMs?: number };
  /** Every credential request, by its `rejected` flag. */
  credentials: boolean[];
  /** Every wait GraphSender made, in ms. */
  waits: number[];
}

const JOB = process.env.POSTROOM_GRAPH_SEND_JOB;

async function runJob(job: Job): Promise<Outcome> {
  const credentials: boolean[] = [];
  const waits: number[] = [];
  const token = async (resource: string): Promise<Credential> => {
    const res = await fetch(`${job.authorityHost}/${job.tenantId}/oauth2/v2.0/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: job.clientId, client_secret: job.secret, scope: `${resource}/.default` }).toString(),
    });
    const body = (await res.json()) as { access_token?: string; expires_in?: number };
    if (!body.access_token) throw new Error(`no token: ${JSON.stringify(body)}`);
    return { mechanism: "XOAUTH2", username: job.target.user, accessToken: body.access_token, expiresAt: new Date(Date.now() + (body.expires_in ?? 3600) * 1000).toISOString() } as Credential;
  };
  const sender = new GraphSender({
    credential: (_tenant, _mailbox, rejected) => {
      credentials.push(rejected);
      return token(credentials.length === 1 && job.firstResource ? job.firstResource : "https://graph.microsoft.com");
    },
    sleep: async (ms) => {
      waits.push(ms);
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
    savedCopyDelayMs: 100,
  });
  try {
    const result = await sender.send(job.target, Buffer.from(job.mime, "base64"));
    const removed = job.op === "send-and-remove" ? await sender.removeSavedCopy(job.target, job.rfcMessageId!) : undefined;
    return { response: result.response, ...(removed === undefined ? {} : { removed }), credentials, waits };
  } catch (error) {
    if (!(error instanceof GraphSendError)) throw error;
    return {
      error: { name: error.name, message: error.message, verdict: error.verdict, graphCode: error.graphCode, ...(error.responseCode === undefined ? {} : { responseCode: error.responseCode }), ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }) },
      credentials,
      waits,
    };
  }
}

if (JOB !== undefined) {
  process.stdout.write(`${JSON.stringify(await runJob(JSON.parse(JOB) as Job))}\n`);
} else {
  const run = promisify(execFile);
  const SELF = fileURLToPath(import.meta.url);
  const TENANT = "8b0e4f2a-1c3d-4e5f-9a6b-7c8d9e0f1a2b";
  const APP = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
  const READ_ONLY = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a";
  const SECRET = "graph-send-secret";
  const PASSWORD = "imap-pw";
  const USERS = ["reply", "denied", "throttled", "nocopy", "stale"].map((n) => `${n}@acme.test`);

  let idp: FakeIdentityPlatform;
  let dovecot: DovecotServer;
  let graph: FakeGraph;

  before(async () => {
    idp = await startFakeIdentityPlatform({
      apps: [
        { tenantId: TENANT, clientId: APP, secrets: [{ value: SECRET }], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
        { tenantId: TENANT, clientId: READ_ONLY, secrets: [{ value: SECRET }], graphRoles: ["Mail.ReadWrite"] },
      ],
    });
    dovecot = await startDovecot({ users: USERS.map((user) => ({ user, password: PASSWORD })) });
    graph = await startFakeGraph({ identity: idp, dovecot: dovecot.info, mailboxes: USERS.map((user) => ({ user, imapPassword: PASSWORD, apps: [APP, READ_ONLY] })) });
  });

  after(async () => {
    await stopAll([graph, dovecot, idp]);
  });

  const mailboxOf = (address: string, saveToSentItems = true) =>
    MailboxConfig.parse({
      id: "support",
      address,
      inbound: { protocol: "graph" },
      outbound: "graph",
      graph: { url: graph.url, saveToSentItems },
      auth: { type: "microsoft365", tenantId: TENANT, clientId: APP, clientSecret: "env:UNUSED" },
      defaultBcc: ["records@acme.test"],
    });

  /** A reply to a customer's message, composed exactly as the sender composes it. */
  async function reply(address: string, commandId: string, saveToSentItems = true): Promise<{ mime: Buffer; rfcMessageId: string; target: GraphTarget }> {
    const mailbox = mailboxOf(address, saveToSentItems);
    const c = SendRequested.parse({ version: "v1", commandId, tenant: "acme", mailbox: "support", kind: "reply", to: [], text: "Your parcel left today.", requestedAt: new Date().toISOString() });
    const rfcMessageId = `<${commandId}.postroom@acme.test>`;
    const original = {
      rfcMessageId: "<order-42@customer.test>",
      references: ["<order-41@customer.test>"],
      subject: "Order 42",
      from: "ann@customer.test",
      fromName: "Ann",
      replyTo: [],
      to: [address],
      cc: [],
      date: new Date("2026-11-02T10:00:00Z"),
      text: "Where is my parcel?",
      html: null,
      archivePath: "/nonexistent",
      attachments: [],
    };
    const { options } = buildMessage(c, mailbox, rfcMessageId, original);
    const chunks: Buffer[] = [];
    for await (const chunk of compileMessage(options, mailbox).createReadStream() as AsyncIterable<Buffer>) chunks.push(chunk);
    return { mime: Buffer.concat(chunks), rfcMessageId, target: { ...graphTarget("acme", "support", mailbox), clientId: APP } };
  }

  async function send(job: Omit<Job, "authorityHost" | "tenantId" | "clientId" | "secret"> & { clientId?: string }): Promise<Outcome> {
    const { stdout } = await run(process.execPath, ["--conditions=source", "--import", "tsx", SELF], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: idp.info.caCertPath, POSTROOM_GRAPH_SEND_JOB: JSON.stringify({ authorityHost: idp.info.authorityHost, tenantId: TENANT, clientId: APP, secret: SECRET, ...job }) },
      timeout: 60_000,
    });
    return JSON.parse(stdout.trim().split("\n").at(-1)!) as Outcome;
  }

  async function sentFolder(user: string): Promise<Buffer[]> {
    return dovecot.withImap(user, async (client) => {
      await client.mailboxCreate("Sent").catch(() => undefined);
      const lock = await client.getMailboxLock("Sent");
      try {
        return (await client.fetchAll("1:*", { source: true })).map((m) => m.source!).filter((s) => s !== undefined);
      } finally {
        lock.release();
      }
    });
  }

  const sentBy = (user: string) => graph.sent.filter((s) => s.user === user);

  test("a reply's composed MIME reaches Graph and Sent Items byte for byte, threading headers and Bcc included", async () => {
    const user = "reply@acme.test";
    const { mime, target } = await reply(user, "cmd-graph-reply-1");
    const outcome = await send({ target, op: "send", mime: mime.toString("base64") });
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    assert.match(outcome.response ?? "", /^202 .*Microsoft Graph sendMail/);
    assert.deepEqual(outcome.credentials, [false], "one token, asked for once");
    const sent = sentBy(user);
    assert.equal(sent.length, 1);
    assert.ok(sent[0]!.mime.equals(mime), "Graph received exactly the composed bytes");
    const text = sent[0]!.mime.toString("utf8");
    assert.match(text, /^In-Reply-To: <order-42@customer\.test>\r$/m);
    assert.match(text, /^References: <order-41@customer\.test> <order-42@customer\.test>\r$/m);
    // Graph's MIME form reads recipients from the headers: without Bcc the campaign's copy is lost.
    assert.match(text, /^Bcc: records@acme\.test\r$/m);
    const inSent = await sentFolder(user);
    assert.equal(inSent.length, 1);
    assert.equal(inSent[0]!.toString("latin1"), mime.toString("latin1"), "the copy in Sent Items is the archived copy");
  });

  test("an app without Mail.Send is refused with 403 ErrorAccessDenied: a permanent failure naming the fix, nothing sent", async () => {
    const user = "denied@acme.test";
    const { mime, target } = await reply(user, "cmd-graph-denied-1");
    const outcome = await send({ target: { ...target, clientId: READ_ONLY }, op: "send", mime: mime.toString("base64"), clientId: READ_ONLY });
    assert.equal(outcome.error?.responseCode, 403);
    assert.equal(outcome.error?.graphCode, "ErrorAccessDenied");
    assert.equal(outcome.error?.verdict.kind, "permanent");
    assert.match(outcome.error!.message, /403 ErrorAccessDenied/);
    assert.match(outcome.error!.message, /Application permissions → Mail\.Send, then Grant admin consent/);
    assert.match(outcome.error!.message, new RegExp(`New-ManagementRoleAssignment -App ${READ_ONLY} -Role "Application Mail.Send"`));
    assert.equal(sentBy(user).length, 0);
    assert.deepEqual(await sentFolder(user), []);
  });

  test("a 429 with Retry-After is waited out and the reply is sent once", async () => {
    const user = "throttled@acme.test";
    const { mime, target } = await reply(user, "cmd-graph-throttled-1");
    graph.throttle(1, 1);
    const outcome = await send({ target, op: "send", mime: mime.toString("base64") });
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    assert.deepEqual(outcome.waits, [1000], "waited as long as Graph asked, once");
    const posts = graph.requests.filter((r) => r.method === "POST" && decodeURIComponent(r.path) === `/v1.0/users/${user}/sendMail`);
    assert.deepEqual(posts.map((r) => r.status), [429, 202]);
    assert.ok(posts[1]!.at.getTime() - posts[0]!.at.getTime() >= 950, "the retry came after the wait");
    assert.equal(sentBy(user).length, 1);
  });

  test("with saveToSentItems false the copy Graph filed is removed: nothing stays in Sent Items", async () => {
    const user = "nocopy@acme.test";
    const { mime, rfcMessageId, target } = await reply(user, "cmd-graph-nocopy-1", false);
    assert.equal(target.saveToSentItems, false);
    const outcome = await send({ target, op: "send-and-remove", mime: mime.toString("base64"), rfcMessageId });
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    assert.equal(outcome.removed, 1);
    assert.equal(sentBy(user).length, 1, "the reply was sent");
    assert.deepEqual(await sentFolder(user), []);
  });

  test("a token Graph refuses (401, wrong audience) is replaced once with a fresh one and the reply goes out", async () => {
    const user = "stale@acme.test";
    const { mime, target } = await reply(user, "cmd-graph-stale-1");
    const outcome = await send({ target, op: "send", mime: mime.toString("base64"), firstResource: "https://outlook.office365.com" });
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    assert.deepEqual(outcome.credentials, [false, true], "the second request told token-service the first was rejected");
    assert.equal(sentBy(user).length, 1);
  });

  test("refusals map onto the sender's verdicts on status and Graph's code", () => {
    const r = (status: number, code: string) => classifyGraphSendError({ status, code, message: "m", appOnly: true, clientId: APP, user: "u@acme.test" }).kind;
    assert.equal(r(429, "ApplicationThrottled"), "retry");
    assert.equal(r(503, "ServiceUnavailable"), "retry");
    assert.equal(r(504, "GatewayTimeout"), "retry");
    assert.equal(r(0, "ETIMEDOUT"), "retry");
    assert.equal(r(401, "InvalidAuthenticationToken"), "needs-admin");
    assert.equal(r(403, "ErrorAccessDenied"), "permanent");
    assert.equal(r(404, "MailboxNotEnabledForRESTAPI"), "permanent");
    assert.equal(r(400, "ErrorMimeContentInvalidBase64String"), "permanent");
    assert.equal(r(400, "ErrorInvalidRecipients"), "permanent");
    assert.match(classifyGraphSendError({ status: 404, code: "MailboxNotEnabledForRESTAPI", message: "m", appOnly: true, user: "u@acme.test" }).reason, /on-premises/);
    assert.equal(retryAfterMs("7"), 7000);
    assert.equal(retryAfterMs(new Date(61_000).toUTCString(), 1_000), 60_000);
    assert.equal(retryAfterMs(null), undefined);
  });
}
