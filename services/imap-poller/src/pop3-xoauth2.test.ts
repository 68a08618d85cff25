import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { after, before, test } from "node:test";
import { dovecotOAuth2, startDovecot, startFakeIdentityPlatform, type DovecotOAuth2Profile, type DovecotServer, type FakeIdentityPlatform } from "@postroom/testkit";
import { Pop3Client, Pop3Error } from "./pop3-client.js";

// POP3 with AUTH XOAUTH2 as Exchange Online offers it (XOAUTH2 only), against Dovecot's oauth2
// passdb validating tokens issued by the fake Microsoft identity platform.
const TENANT = "11111111-2222-3333-4444-555555555555";
const APP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET = "pop-app-secret";
const MAILBOX = "pop-oauth@example.test";
let idp: FakeIdentityPlatform;
let oauth: DovecotOAuth2Profile;
let dovecot: DovecotServer;

before(async () => {
  idp = await startFakeIdentityPlatform({
    apps: [{ tenantId: TENANT, clientId: APP, objectId: "0b1ec7", secrets: [{ value: SECRET }], roles: ["POP.AccessAsApp"] }],
    grants: { [MAILBOX]: [APP] },
  });
  oauth = await dovecotOAuth2({ introspectionUrl: idp.info.introspectionUrl, caCertPath: idp.info.caCertPath, grants: { [MAILBOX]: [APP] } });
  dovecot = await startDovecot({ users: [{ user: MAILBOX, password: "fixture" }], authMechanisms: oauth.authMechanisms, extraConfig: oauth.extraConfig });
});
after(async () => {
  await dovecot?.stop();
  await oauth?.dir.remove();
  await idp?.stop();
});

/** A client-credentials token from the fake platform, as token-service would get one. */
async function token(): Promise<string> {
  const ca = await readFile(idp.info.caCertPath);
  const body = new URLSearchParams({ grant_type: "client_credentials", client_id: APP, client_secret: SECRET, scope: "https://outlook.office365.com/.default" }).toString();
  return new Promise((resolve, reject) => {
    const req = request(`${idp.info.authorityHost}/${TENANT}/oauth2/v2.0/token`, { method: "POST", ca, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => {
        const json = JSON.parse(Buffer.concat(parts).toString("utf8")) as { access_token?: string };
        if (json.access_token) resolve(json.access_token);
        else reject(new Error(Buffer.concat(parts).toString("utf8")));
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

function client(): Pop3Client {
  return new Pop3Client({ host: dovecot.info.host, port: dovecot.info.pop3Port, tls: "none", timeoutMs: 10_000 });
}

test("AUTH XOAUTH2 with an app token logs in to the granted mailbox and lists its mail", async () => {
  await dovecot.appendMessage(MAILBOX, Buffer.from("Subject: hi\r\n\r\nhello\r\n"));
  const c = client();
  await c.connect();
  assert.ok((await c.capa()).some((l) => /^SASL .*XOAUTH2/.test(l)), "the server offers XOAUTH2");
  await c.authXoauth2(MAILBOX, await token());
  assert.equal((await c.listing()).length, 1);
  await c.quit();
});

test("a refused token is an authentication failure with the server's text, never the token", async () => {
  const c = client();
  await c.connect();
  await assert.rejects(c.authXoauth2(MAILBOX, "not-a-token"), (e: unknown) => {
    assert.ok(e instanceof Pop3Error);
    assert.equal(e.authenticationFailed, true);
    assert.ok(e.responseText);
    assert.doesNotMatch(e.message, /not-a-token/);
    return true;
  });
  c.close();
});
