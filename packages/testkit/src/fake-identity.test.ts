import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { after, before, test } from "node:test";
import { dovecotOAuth2, type DovecotOAuth2Profile } from "./dovecot-oauth2.js";
import { startDovecot, type DovecotServer, stopAll } from "@postroom/mail-servers";
import { startFakeIdentityPlatform, type FakeIdentityPlatform } from "./fake-identity.js";
import { LineSocket } from "./line-socket.js";

const TENANT = "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88";
const APP = "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66";
const PUBLIC = "7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f";
let idp: FakeIdentityPlatform;
let ca: string;
let oauth: DovecotOAuth2Profile;
let dovecot: DovecotServer;

before(async () => {
  idp = await startFakeIdentityPlatform({
    apps: [
      { tenantId: TENANT, clientId: APP, objectId: "obj-1", secrets: [{ value: "right" }], roles: ["IMAP.AccessAsApp"] },
      { tenantId: TENANT, clientId: PUBLIC, publicClient: true },
    ],
  });
  ca = await readFile(idp.info.caCertPath, "utf8");
  oauth = await dovecotOAuth2({ introspectionUrl: idp.info.introspectionUrl, caCertPath: idp.info.caCertPath, grants: { "granted@acme.test": [APP] } });
  dovecot = await startDovecot({ authMechanisms: oauth.authMechanisms, extraConfig: oauth.extraConfig });
});

after(async () => {
  await stopAll([idp, dovecot]);
  await oauth?.dir.remove();
});

/** POSTs a form to the fake platform, trusting its CA (this process cannot use NODE_EXTRA_CA_CERTS). */
function post(path: string, form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${idp.info.authorityHost}${path}`, { method: "POST", ca, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown> }));
    });
    req.on("error", reject);
    req.end(new URLSearchParams(form).toString());
  });
}

const grant = (secret: string, scope = "https://outlook.office365.com/.default") =>
  post(`/${TENANT}/oauth2/v2.0/token`, { grant_type: "client_credentials", client_id: APP, client_secret: secret, scope });

async function imapLogin(user: string, token: string): Promise<string> {
  const s = await LineSocket.connect(dovecot.info.host, dovecot.info.imapPort);
  try {
    await s.readLine();
    s.send(`a AUTHENTICATE XOAUTH2 ${Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString("base64")}`);
    for (;;) {
      const l = await s.readLine();
      if (l.startsWith("+")) s.send("");
      else if (l.startsWith("a ")) return l;
    }
  } finally {
    s.close();
  }
}

test("a refusal looks like Azure's: error, AADSTS description, error_codes, trace and correlation ids", async () => {
  const r = await grant("wrong");
  assert.equal(r.status, 401);
  assert.equal(r.body.error, "invalid_client");
  assert.match(String(r.body.error_description), /^AADSTS7000215: /);
  assert.deepEqual(r.body.error_codes, [7000215]);
  assert.ok(r.body.trace_id && r.body.correlation_id);
  assert.deepEqual((await grant("right", "https://outlook.office365.com/IMAP.AccessAsApp")).body.error_codes, [1002012]);
  assert.deepEqual((await grant("right", "https://graph.microsoft.com/.default")).body.error_codes, [500011]);
  assert.deepEqual((await post("/common/oauth2/v2.0/token", { grant_type: "client_credentials", client_id: APP })).body.error_codes, [9001023]);
});

test("a granted token is shaped like Exchange Online's and counted", async () => {
  const before = idp.requestsFor(APP).length;
  const r = await grant("right");
  assert.equal(r.status, 200);
  const claims = JSON.parse(Buffer.from(String(r.body.access_token).split(".")[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
  assert.deepEqual([claims.aud, claims.iss, claims.tid, claims.appid, claims.oid], ["https://outlook.office365.com", `https://sts.windows.net/${TENANT}/`, TENANT, APP, "obj-1"]);
  assert.deepEqual(claims.roles, ["IMAP.AccessAsApp"]);
  assert.equal(idp.requestsFor(APP).length, before + 1);
});

test("Dovecot logs in with XOAUTH2 only where the app is granted, and follows grant and revoke", async () => {
  const token = String((await grant("right")).body.access_token);
  assert.match(await imapLogin("granted@acme.test", token), /^a OK/);
  assert.match(await imapLogin("other@acme.test", token), /^a NO/);
  await oauth.grant("other@acme.test", APP);
  assert.match(await imapLogin("other@acme.test", token), /^a OK/);
  await oauth.revoke("granted@acme.test", APP);
  assert.match(await imapLogin("granted@acme.test", token), /^a NO/);
  assert.match(await imapLogin("granted@acme.test", "not-a-token"), /^a NO/);
});

test("POP3 needs POP.AccessAsApp: a token with only the IMAP role is refused there", async () => {
  const token = String((await grant("right")).body.access_token);
  const s = await LineSocket.connect(dovecot.info.host, dovecot.info.pop3Port);
  try {
    await s.readLine();
    let reply = await s.command(`AUTH XOAUTH2 ${Buffer.from(`user=other@acme.test\x01auth=Bearer ${token}\x01\x01`).toString("base64")}`);
    if (reply.startsWith("+ ")) reply = await s.command("");
    assert.match(reply, /^-ERR/);
  } finally {
    s.close();
  }
  assert.ok(idp.introspections.some((i) => i.service === "pop3" && !i.active && i.reason === "missing role POP.AccessAsApp"));
});

test("device code: authorization_pending until approved, then tokens once; refresh tokens rotate; a revoked grant is invalid_grant", async () => {
  const scope = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";
  const dc = await post("/consumers/oauth2/v2.0/devicecode", { client_id: PUBLIC, scope });
  assert.equal(dc.status, 200);
  const deviceCode = String(dc.body.device_code);
  const poll = () => post("/consumers/oauth2/v2.0/token", { grant_type: "urn:ietf:params:oauth:grant-type:device_code", client_id: PUBLIC, device_code: deviceCode });
  const pending = await poll();
  assert.deepEqual([pending.status, pending.body.error], [400, "authorization_pending"]);
  assert.match(String(pending.body.error_description), /^AADSTS70016:/);
  idp.approveDeviceCode(String(dc.body.user_code), "owner@outlook.test");
  const tokens = await poll();
  assert.equal(tokens.status, 200);
  assert.ok(idp.validate(String(tokens.body.access_token), "imap", "owner@outlook.test").ok);
  assert.equal(idp.validate(String(tokens.body.access_token), "pop3").reason, "missing scope POP.AccessAsUser.All");
  assert.equal((await poll()).body.error, "invalid_grant", "a device code is redeemed once");

  const refresh = (rt: unknown) => post("/consumers/oauth2/v2.0/token", { grant_type: "refresh_token", client_id: PUBLIC, refresh_token: String(rt), scope });
  const second = await refresh(tokens.body.refresh_token);
  assert.equal(second.status, 200);
  assert.notEqual(second.body.refresh_token, tokens.body.refresh_token);
  const reused = await refresh(tokens.body.refresh_token);
  assert.deepEqual([reused.status, reused.body.error], [400, "invalid_grant"], "the rotated-out refresh token is refused");
  idp.revokeGrants("owner@outlook.test");
  const revoked = await refresh(second.body.refresh_token);
  assert.equal(revoked.body.error, "invalid_grant");
  assert.match(String(revoked.body.error_description), /^AADSTS50173:/);
  // A confidential app may not use the public-client flows.
  assert.match(String((await post("/consumers/oauth2/v2.0/devicecode", { client_id: APP, scope })).body.error_description), /^AADSTS7000218:/);
});
