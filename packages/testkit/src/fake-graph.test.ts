import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { after, before, test } from "node:test";
import { startDovecot, stopAll, type DovecotServer } from "@postroom/mail-servers";
import { startFakeGraph, type FakeGraph } from "./fake-graph.js";
import { startFakeIdentityPlatform, type FakeIdentityPlatform } from "./fake-identity.js";

const TENANT = "8b0e4f2a-1c3d-4e5f-9a6b-7c8d9e0f1a2b";
const APP = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const STRANGER = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a";
const SEND_ONLY = "2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b";
const PUBLIC = "3f4a5b6c-7d8e-4f9a-8b1c-2d3e4f5a6b7c";
const PASSWORD = "imap-pw";
/** One mailbox per test that syncs, so no test sees another's mail. */
const USERS = ["paging", "changes", "bytes", "reads", "sender", "limits", "expiry", "access", "backlog", "person"].map((n) => `${n}@contoso.test`);
const box = (name: string) => `${name}@contoso.test`;

let idp: FakeIdentityPlatform;
let dovecot: DovecotServer;
let graph: FakeGraph;
let ca: string;
let token: string;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  raw: Buffer;
  json: Record<string, unknown>;
}

/** One HTTPS request trusting the fake platform's CA (this process cannot use NODE_EXTRA_CA_CERTS). */
function call(method: string, url: string, options: { token?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Reply> {
  const target = url.startsWith("https://") ? url : `${graph.url}${url}`;
  const headers: Record<string, string> = { ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }), ...options.headers };
  return new Promise((resolve, reject) => {
    const req = request(target, { method, ca, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const raw = Buffer.concat(chunks);
        const isJson = String(res.headers["content-type"] ?? "").startsWith("application/json");
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, json: isJson ? (JSON.parse(raw.toString("utf8")) as Record<string, unknown>) : {} });
      });
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

const json = (value: unknown) => ({ body: JSON.stringify(value), headers: { "content-type": "application/json" } });

async function post(path: string, form: Record<string, string>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(`${idp.info.authorityHost}${path}`, { method: "POST", ca, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>));
    });
    req.on("error", reject);
    req.end(new URLSearchParams(form).toString());
  });
}

async function appToken(clientId = APP): Promise<string> {
  const r = await post(`/${TENANT}/oauth2/v2.0/token`, { grant_type: "client_credentials", client_id: clientId, client_secret: "secret", scope: "https://graph.microsoft.com/.default" });
  assert.equal(typeof r.access_token, "string", JSON.stringify(r));
  return String(r.access_token);
}

function mail(subject: string, body = "Hello."): Buffer {
  return Buffer.from([`From: Customer <customer@example.org>`, `To: support@contoso.test`, `Subject: ${subject}`, `Message-ID: <${subject.replace(/\W/g, "")}@example.org>`, "", body, ""].join("\r\n"));
}

interface Page {
  value: Array<Record<string, unknown>>;
  "@odata.nextLink"?: string;
  "@odata.deltaLink"?: string;
}

/** Follows nextLinks from `url` to the deltaLink; returns every page. */
async function sync(url: string, pageSize = 10): Promise<{ pages: Page[]; deltaLink: string }> {
  const pages: Page[] = [];
  let next: string | undefined = url;
  while (next !== undefined) {
    const r = await call("GET", next, { token, headers: { prefer: `odata.maxpagesize=${pageSize}, IdType="ImmutableId"` } });
    assert.equal(r.status, 200, r.raw.toString());
    const page = r.json as unknown as Page;
    pages.push(page);
    if (page["@odata.deltaLink"] !== undefined) return { pages, deltaLink: page["@odata.deltaLink"] };
    next = page["@odata.nextLink"];
    assert.ok(next !== undefined, "a page has a nextLink or a deltaLink");
  }
  throw new Error("unreachable");
}

const deltaUrl = (user: string, folder = "inbox") => `/v1.0/users/${user}/mailFolders/${folder}/messages/delta`;
const values = (pages: Page[]) => pages.flatMap((p) => p.value);

before(async () => {
  idp = await startFakeIdentityPlatform({
    apps: [
      { tenantId: TENANT, clientId: APP, secrets: [{ value: "secret" }], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
      { tenantId: TENANT, clientId: STRANGER, secrets: [{ value: "secret" }], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
      { tenantId: TENANT, clientId: SEND_ONLY, secrets: [{ value: "secret" }], graphRoles: ["Mail.Send"] },
      { tenantId: TENANT, clientId: PUBLIC, publicClient: true },
    ],
  });
  ca = await readFile(idp.info.caCertPath, "utf8");
  dovecot = await startDovecot({ users: USERS.map((user) => ({ user, password: PASSWORD })) });
  graph = await startFakeGraph({
    identity: idp,
    dovecot: dovecot.info,
    mailboxes: USERS.map((user) => ({ user, imapPassword: PASSWORD, apps: [APP, SEND_ONLY] })),
  });
  token = await appToken();
});

after(async () => {
  await stopAll([idp, dovecot, graph]);
});

test("a Graph token from client credentials has Graph's audience and the app's Graph roles", () => {
  const claims = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
  assert.equal(claims.aud, "https://graph.microsoft.com");
  assert.deepEqual(claims.roles, ["Mail.ReadWrite", "Mail.Send"]);
  assert.equal(idp.validateGraph(token, box("paging"), "Mail.Send").ok, true);
});

test("a first delta of 25 messages in pages of 10 lists each message once and ends with a deltaLink", async () => {
  const user = box("paging");
  for (let i = 1; i <= 25; i++) await dovecot.appendMessage(user, mail(`Paging ${i}`));
  const { pages, deltaLink } = await sync(deltaUrl(user));
  assert.deepEqual(
    pages.map((p) => p.value.length),
    [10, 10, 5],
  );
  assert.ok(pages.slice(0, -1).every((p) => p["@odata.nextLink"]?.includes("$skiptoken=") && p["@odata.deltaLink"] === undefined));
  assert.match(deltaLink, /\$deltatoken=/);
  const all = values(pages);
  assert.equal(new Set(all.map((m) => m.id)).size, 25);
  assert.deepEqual(all.map((m) => m.subject).sort(), Array.from({ length: 25 }, (_, i) => `Paging ${i + 1}`).sort());
  const first = all.find((m) => m.subject === "Paging 1")!;
  assert.equal(first.internetMessageId, "<Paging1@example.org>");
  assert.equal(first.isRead, false);
  assert.match(String(first.receivedDateTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(typeof first.parentFolderId, "string");
  // Nothing changed: the deltaLink answers an empty page and a new deltaLink.
  const again = await sync(deltaLink);
  assert.deepEqual(values(again.pages), []);
});

test("the next delta shows a new message, a read message (same id, isRead true) and a moved one as @removed; the move keeps its id", async () => {
  const user = box("changes");
  const a = await dovecot.appendMessage(user, mail("Read me"));
  await dovecot.appendMessage(user, mail("Move me"));
  await dovecot.appendMessage(user, mail("Leave me"));
  const first = await sync(deltaUrl(user));
  const byId = new Map(values(first.pages).map((m) => [String(m.subject), String(m.id)]));

  await dovecot.appendMessage(user, mail("New one"));
  await dovecot.withImap(user, async (client) => {
    const lock = await client.getMailboxLock("INBOX");
    try {
      await client.messageFlagsAdd(String(a.uid), ["\\Seen"], { uid: true });
    } finally {
      lock.release();
    }
  });
  const moved = await call("POST", `/v1.0/users/${user}/messages/${byId.get("Move me")}/move`, { token, ...json({ destinationId: "archive" }) });
  assert.equal(moved.status, 201, moved.raw.toString());
  assert.equal(moved.json.id, byId.get("Move me"), "ImmutableId: a move keeps the id");
  assert.equal(moved.json.subject, "Move me");

  const next = values((await sync(first.deltaLink)).pages);
  const read = next.find((m) => m.id === byId.get("Read me"));
  assert.equal(read?.isRead, true);
  assert.equal(next.find((m) => m.subject === "New one")?.isRead, false);
  assert.deepEqual(next.find((m) => m.id === byId.get("Move me")), { id: byId.get("Move me"), "@removed": { reason: "deleted" } });
  assert.equal(next.find((m) => m.id === byId.get("Leave me")), undefined, "an unchanged message is not listed again");
  assert.equal(next.length, 3);

  const archive = values((await sync(deltaUrl(user, "archive"))).pages);
  assert.deepEqual(
    archive.map((m) => [m.id, m.subject]),
    [[byId.get("Move me"), "Move me"]],
  );
  const deleted = await call("DELETE", `/v1.0/users/${user}/messages/${byId.get("Leave me")}`, { token });
  assert.equal(deleted.status, 204);
  assert.equal((await dovecot.flagsOf(user, "Trash")).size, 1, "Graph's delete moves to Deleted Items");
});

test("$value returns the stored MIME byte for byte, and 404 ErrorItemNotFound once the message is gone", async () => {
  const user = box("bytes");
  // 8-bit bytes, trailing spaces and no final line end: anything re-encoded would show. (A bare
  // LF would not survive: Dovecot's Maildir store hands every line back with CRLF, as IMAP wants.)
  const raw = Buffer.concat([Buffer.from("Subject: Bytes\r\nMessage-ID: <bytes@example.org>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf"), Buffer.from([0xe9, 0x20, 0x20, 0x0d, 0x0a]), Buffer.from("end")]);
  const { uid } = await dovecot.appendMessage(user, raw);
  const [message] = values((await sync(deltaUrl(user))).pages);
  const value = await call("GET", `/v1.0/users/${user}/messages/${message!.id}/$value`, { token });
  assert.equal(value.status, 200);
  assert.match(String(value.headers["content-type"]), /^text\/plain/);
  assert.deepEqual(value.raw, raw);
  assert.deepEqual([...(await dovecot.flagsOf(user)).values()], [[]], "reading $value does not mark the message read");
  await dovecot.withImap(user, async (client) => {
    const lock = await client.getMailboxLock("INBOX");
    try {
      await client.messageDelete(String(uid), { uid: true });
    } finally {
      lock.release();
    }
  });
  const gone = await call("GET", `/v1.0/users/${user}/messages/${message!.id}/$value`, { token });
  assert.deepEqual([gone.status, (gone.json.error as Record<string, unknown>).code], [404, "ErrorItemNotFound"]);
});

test("PATCH isRead sets and clears \\Seen in Dovecot and answers the message", async () => {
  const user = box("reads");
  const { uid } = await dovecot.appendMessage(user, mail("Patch me"));
  const [message] = values((await sync(deltaUrl(user))).pages);
  const patched = await call("PATCH", `/v1.0/users/${user}/messages/${message!.id}`, { token, ...json({ isRead: true }) });
  assert.equal(patched.status, 200);
  assert.deepEqual([patched.json.id, patched.json.isRead], [message!.id, true]);
  assert.deepEqual((await dovecot.flagsOf(user)).get(uid), ["\\Seen"]);
  await call("PATCH", `/v1.0/users/${user}/messages/${message!.id}`, { token, ...json({ isRead: false }) });
  assert.deepEqual((await dovecot.flagsOf(user)).get(uid), []);
});

test("sendMail with a base64 MIME body answers 202, records the MIME and saves it to Sent; bad base64 is 400", async () => {
  const user = box("sender");
  const mime = mail("Outgoing reply", "Thanks for writing.");
  const sent = await call("POST", `/v1.0/users/${user}/sendMail`, { token, body: mime.toString("base64"), headers: { "content-type": "text/plain" } });
  assert.equal(sent.status, 202, sent.raw.toString());
  assert.deepEqual(graph.sent.at(-1)?.mime, mime);
  assert.equal(graph.sent.at(-1)?.user, user);
  const inSent = await dovecot.withImap(user, async (client) => {
    const lock = await client.getMailboxLock("Sent");
    try {
      return (await client.fetchAll("1:*", { source: true })).map((m) => m.source);
    } finally {
      lock.release();
    }
  });
  assert.deepEqual(inSent, [mime]);
  const bad = await call("POST", `/v1.0/users/${user}/sendMail`, { token, body: "not base64 at all!", headers: { "content-type": "text/plain" } });
  assert.deepEqual([bad.status, (bad.json.error as Record<string, unknown>).code], [400, "ErrorMimeContentInvalidBase64String"]);
  assert.equal(graph.sent.length, 1);
  // sendMail needs Mail.Send, reading needs Mail.ReadWrite: a send-only app may send but not read.
  const sendOnly = await appToken(SEND_ONLY);
  assert.equal((await call("POST", `/v1.0/users/${user}/sendMail`, { token: sendOnly, body: mime.toString("base64"), headers: { "content-type": "text/plain" } })).status, 202);
  const read = await call("GET", deltaUrl(user), { token: sendOnly });
  assert.deepEqual([read.status, (read.json.error as Record<string, unknown>).code], [403, "ErrorAccessDenied"]);
});

test("throttle(n) answers the next n requests 429 ApplicationThrottled with Retry-After, then serves again", async () => {
  const user = box("limits");
  graph.throttle(2, 7);
  for (let i = 0; i < 2; i++) {
    const r = await call("GET", `/v1.0/users/${user}`, { token });
    assert.deepEqual([r.status, r.headers["retry-after"], (r.json.error as Record<string, unknown>).code], [429, "7", "ApplicationThrottled"]);
  }
  const ok = await call("GET", `/v1.0/users/${user}`, { token });
  assert.deepEqual([ok.status, ok.json.userPrincipalName], [200, user]);
  assert.deepEqual(
    graph.requests.slice(-3).map((r) => r.status),
    [429, 429, 200],
  );
  const folder = await call("GET", `/v1.0/users/${user}/mailFolders/inbox`, { token });
  assert.deepEqual([folder.status, folder.json.displayName, folder.json.totalItemCount], [200, "Inbox", 0]);
});

test("delta and skip tokens answer 410 syncStateNotFound after expireDeltaTokens() and after a UIDVALIDITY change", async () => {
  const user = box("expiry");
  for (let i = 1; i <= 3; i++) await dovecot.appendMessage(user, mail(`Expiry ${i}`));
  const first = await call("GET", deltaUrl(user), { token, headers: { prefer: "odata.maxpagesize=2" } });
  const skipLink = String(first.json["@odata.nextLink"]);
  const { deltaLink } = await sync(deltaUrl(user));
  graph.expireDeltaTokens();
  for (const link of [skipLink, deltaLink]) {
    const r = await call("GET", link, { token });
    assert.deepEqual([r.status, (r.json.error as Record<string, unknown>).code], [410, "syncStateNotFound"]);
    assert.match(String((r.json.error as Record<string, unknown>).message), /sync state.*not found/);
  }
  const fresh = await sync(deltaUrl(user));
  await dovecot.recreateFolder(user, "INBOX");
  const r = await call("GET", fresh.deltaLink, { token });
  assert.deepEqual([r.status, (r.json.error as Record<string, unknown>).code], [410, "syncStateNotFound"]);
});

test("an app not granted the mailbox gets 403 ErrorAccessDenied until grant(), and again after revoke()", async () => {
  const user = box("access");
  const stranger = await appToken(STRANGER);
  const denied = await call("GET", deltaUrl(user), { token: stranger });
  assert.deepEqual([denied.status, denied.json.error], [403, { ...(denied.json.error as object), code: "ErrorAccessDenied", message: "Access is denied. Check credentials and try again." }]);
  graph.grant(user, STRANGER);
  assert.equal((await call("GET", deltaUrl(user), { token: stranger })).status, 200);
  graph.revoke(user, STRANGER);
  assert.equal((await call("GET", deltaUrl(user), { token: stranger })).status, 403);

  graph.disableRest(user);
  const disabled = await call("GET", `/v1.0/users/${user}`, { token });
  assert.deepEqual([disabled.status, (disabled.json.error as Record<string, unknown>).code], [404, "MailboxNotEnabledForRESTAPI"]);
  graph.enableRest(user);
  const unknown = await call("GET", deltaUrl("nobody@contoso.test"), { token });
  assert.deepEqual([unknown.status, (unknown.json.error as Record<string, unknown>).code], [404, "ErrorInvalidUser"]);
});

test("a garbage, missing, Exchange-audience or expired token is 401 InvalidAuthenticationToken", async () => {
  const user = box("access");
  const lifetime = idp.tokenLifetimeSeconds;
  idp.tokenLifetimeSeconds = -60;
  let expired: string;
  try {
    expired = await appToken();
  } finally {
    idp.tokenLifetimeSeconds = lifetime;
  }
  for (const bad of ["garbage", expired, `${token.slice(0, -4)}AAAA`, undefined]) {
    const r = await call("GET", deltaUrl(user), bad === undefined ? {} : { token: bad });
    assert.deepEqual([r.status, (r.json.error as Record<string, unknown>).code], [401, "InvalidAuthenticationToken"]);
  }
});

test("a delegated Graph token (device code) opens its own mailbox, as /me too, and no other", async () => {
  const user = box("person");
  const scope = "https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send offline_access";
  const dc = await post(`/${TENANT}/oauth2/v2.0/devicecode`, { client_id: PUBLIC, scope });
  idp.approveDeviceCode(String(dc.user_code), user);
  const tokens = await post(`/${TENANT}/oauth2/v2.0/token`, { grant_type: "urn:ietf:params:oauth:grant-type:device_code", client_id: PUBLIC, device_code: String(dc.device_code) });
  const claims = JSON.parse(Buffer.from(String(tokens.access_token).split(".")[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
  assert.deepEqual([claims.aud, claims.scp], ["https://graph.microsoft.com", "Mail.ReadWrite Mail.Send"]);
  assert.equal(tokens.scope, "https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send openid profile offline_access");
  const delegated = String(tokens.access_token);
  assert.equal((await call("GET", deltaUrl(user), { token: delegated })).status, 200);
  assert.equal((await call("GET", deltaUrl("me"), { token: delegated })).status, 200);
  assert.equal((await call("GET", deltaUrl(box("paging")), { token: delegated })).status, 403);
  // Exchange-scoped validation is unchanged by the Graph audience.
  assert.equal(idp.validate(delegated, "imap", user).reason, "wrong audience https://graph.microsoft.com");
  // The refresh token serves another resource when asked, as Microsoft's do.
  const outlook = await post(`/${TENANT}/oauth2/v2.0/token`, { grant_type: "refresh_token", client_id: PUBLIC, refresh_token: String(tokens.refresh_token), scope: "https://outlook.office.com/IMAP.AccessAsUser.All offline_access" });
  assert.ok(idp.validate(String(outlook.access_token), "imap", user).ok);
});

test("a 500-message backlog pages through in a few seconds", async () => {
  const user = box("backlog");
  await dovecot.withImap(user, async (client) => {
    for (let i = 1; i <= 500; i++) await client.append("INBOX", mail(`Backlog ${i}`), []);
  });
  const started = Date.now();
  const { pages } = await sync(deltaUrl(user));
  const elapsed = Date.now() - started;
  assert.equal(pages.length, 50);
  assert.equal(new Set(values(pages).map((m) => m.id)).size, 500);
  assert.ok(elapsed < 5_000, `took ${elapsed} ms`);
});
