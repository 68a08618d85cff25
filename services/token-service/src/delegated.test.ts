// Delegated OAuth against the fake identity platform over real HTTPS and a real NATS KV bucket:
// device-code sign-in, refresh-token rotation with each new grant sealed before the old one is
// gone, a "restart" (a new source over the same store), a revoked grant, and the store's sealing.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { request } from "node:https";
import type { INetworkModule, NetworkResponse } from "@azure/msal-node";
import { after, before, describe, it } from "node:test";
import { connectNats, openKv, type NatsConnection } from "@postroom/nats-kit";
import { cleanupNamespace, natsUrl, startFakeIdentityPlatform, testNamespace, waitFor, type FakeIdentityPlatform } from "@postroom/testkit";
import type { KV } from "@nats-io/kv";
import { CredentialConfigError } from "./classify.js";
import { MicrosoftDelegatedSource, type DelegatedMailbox } from "./delegated.js";
import { GrantStore, grantKey, openGrant, sealGrant } from "./grant-store.js";

const CLIENT_ID = "7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f";
const MAILBOX = "someone@outlook.test";
const SCOPES = ["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send", "offline_access"];
const KEY = "k".repeat(8) + "-test-key-encryption-key-0123456789";

let idp: FakeIdentityPlatform;
let nc: NatsConnection;
let kv: KV;
let ca: string;

/**
 * msal's requests over node:https trusting the fake platform's CA: NODE_EXTRA_CA_CERTS (how the
 * service process is given it) is read only at process start, before this file made the CA.
 */
const network: INetworkModule = {
  sendGetRequestAsync: (url, options) => send("GET", url, options),
  sendPostRequestAsync: (url, options) => send("POST", url, options),
};
function send<T>(method: string, url: string, options?: { headers?: Record<string, string>; body?: string }): Promise<NetworkResponse<T>> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, ca, headers: options?.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const headers = Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, String(v)]));
        resolve({ headers, status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as T });
      });
    });
    req.on("error", reject);
    req.end(options?.body);
  });
}
const root = testNamespace("delegated");

before(async () => {
  idp = await startFakeIdentityPlatform({ apps: [{ tenantId: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", clientId: CLIENT_ID, publicClient: true }], tokenLifetimeSeconds: 30 });
  ca = readFileSync(idp.info.caCertPath, "utf8");
  nc = await connectNats({ url: natsUrl(), name: "delegated-test" });
  kv = await openKv(nc, `${root}-oauth-grants`);
});

after(async () => {
  await nc?.drain();
  await cleanupNamespace(natsUrl(), root).catch(() => undefined);
  await idp?.stop();
});

function mailbox(over: Partial<DelegatedMailbox> = {}): DelegatedMailbox {
  return {
    key: "acme.home",
    address: MAILBOX,
    clientId: CLIENT_ID,
    authorityTenant: "consumers",
    scopes: SCOPES,
    cloud: "global",
    authorityHost: idp.info.authorityHost,
    signInCommand: "postroom auth sign-in --config /etc/postroom.yaml --mailbox acme/home",
    networkClient: network,
    ...over,
  };
}

/** Signs in as `as` through the device-code flow, approving the code the way a person would. */
async function signIn(source: MicrosoftDelegatedSource, as = MAILBOX): Promise<string> {
  const { start, done } = await source.signIn();
  assert.match(start.message, new RegExp(start.userCode));
  // The source polls: wait until it has been told to wait at least once, then approve.
  await waitFor(() => (idp.deviceCodes.find((d) => d.userCode === start.userCode)?.pendingPolls ?? 0) >= 1, { timeoutMs: 20_000, what: "a pending poll" });
  idp.approveDeviceCode(start.userCode, as);
  return done;
}

describe("delegated Microsoft OAuth", () => {
  it("signs in with a device code, then every token comes from a rotated refresh token that is sealed in the store first", { timeout: 60_000 }, async () => {
    const store = new GrantStore(kv, [grantKey(KEY)]);
    const source = new MicrosoftDelegatedSource(mailbox(), store);
    await assert.rejects(source.acquire(), (e: unknown) => e instanceof CredentialConfigError && e.code === "not-signed-in" && e.fix.includes("postroom auth sign-in --config /etc/postroom.yaml --mailbox acme/home"));
    assert.equal(await signIn(source), MAILBOX);

    const tokens: string[] = [];
    for (let i = 0; i < 4; i++) {
      const t = await source.acquire();
      tokens.push(t.token);
      for (const service of ["imap", "pop3", "smtp"]) assert.deepEqual([service, idp.validate(t.token, service, MAILBOX).ok], [service, true]);
      // The stored grant holds the newest refresh token, sealed: the plaintext is nowhere in the bucket.
      const raw = (await kv.get("acme.home"))!.string();
      for (const rt of idp.issuedRefreshTokens) assert.ok(!raw.includes(rt), "a refresh token is in the bucket in clear");
      assert.ok(!raw.includes(MAILBOX), "the account name is sealed too");
      const newest = idp.issuedRefreshTokens.at(-1)!;
      assert.ok((await store.load("acme.home"))!.includes(newest), "the newest refresh token is the one stored");
    }
    assert.equal(new Set(tokens).size, 4);
    assert.ok(idp.refreshRequests(CLIENT_ID).filter((r) => r.status === 200).length >= 4, "each fresh token redeemed (and rotated) the refresh token");

    // A restart: a new msal instance over the same store gets a token without a new sign-in.
    const restarted = new MicrosoftDelegatedSource(mailbox(), new GrantStore(kv, [grantKey(KEY)]));
    assert.ok(idp.validate((await restarted.acquire()).token, "imap", MAILBOX).ok);

    // The person changes their password: the grant is over, and the error names the re-sign-in.
    idp.revokeGrants(MAILBOX);
    await assert.rejects(restarted.acquire(), (e: unknown) => {
      assert.ok(e instanceof CredentialConfigError);
      assert.equal(e.code, "invalid_grant");
      assert.match(e.message, /AADSTS50173/);
      assert.equal(e.fix, "sign the mailbox in again: postroom auth sign-in --config /etc/postroom.yaml --mailbox acme/home");
      return true;
    });
    // Signing in again makes it work again.
    await signIn(restarted);
    assert.ok(idp.validate((await restarted.acquire()).token, "smtp", MAILBOX).ok);
  });

  it("refuses a sign-in by another account and keeps no grant for it", { timeout: 60_000 }, async () => {
    const source = new MicrosoftDelegatedSource(mailbox({ key: "acme.other" }), new GrantStore(kv, [grantKey(KEY)]));
    await assert.rejects(signIn(source, "intruder@outlook.test"), /signed in as intruder@outlook\.test, not as the mailbox someone@outlook\.test/);
    assert.equal(await source.signedIn(), false);
    await assert.rejects(source.acquire(), (e: unknown) => e instanceof CredentialConfigError && e.code === "not-signed-in");
  });

  it("an unknown public client is refused before any code is shown", async () => {
    const source = new MicrosoftDelegatedSource(mailbox({ key: "acme.nobody", clientId: "00000000-0000-4000-8000-000000000000" }), new GrantStore(kv, [grantKey(KEY)]));
    await assert.rejects(source.signIn(), (e: unknown) => e instanceof CredentialConfigError && e.code === "device-code-refused" && /Allow public client flows/.test(e.fix));
  });
});

describe("the sealed grant store", () => {
  it("opens only under the mailbox it was sealed for, and only with a configured key", () => {
    const a = grantKey(KEY);
    const b = grantKey("another-key-encryption-key-of-32-characters!");
    const sealed = sealGrant('{"RefreshToken":"secret-rt"}', a, "acme.home");
    assert.ok(!sealed.includes("secret-rt"));
    assert.equal(openGrant(sealed, [b, a], "acme.home").plaintext, '{"RefreshToken":"secret-rt"}');
    assert.throws(() => openGrant(sealed, [a], "acme.other"), (e: unknown) => e instanceof CredentialConfigError && e.code === "grant-unreadable");
    assert.throws(() => openGrant(sealed, [b], "acme.home"), (e: unknown) => e instanceof CredentialConfigError && e.code === "grant-key-missing" && /previousKeys/.test(e.fix));
    assert.throws(() => grantKey("short"), /32 characters/);
  });

  it("key rotation: grants sealed with a previous key are read, and re-sealed with the new key", async () => {
    const oldKey = grantKey(KEY);
    const newKey = grantKey("the-new-key-encryption-key-for-rotation-0001");
    await new GrantStore(kv, [oldKey]).save("acme.rotate", "grant-text");
    const rotating = new GrantStore(kv, [newKey, oldKey]);
    assert.equal(await rotating.load("acme.rotate"), "grant-text");
    assert.equal(await rotating.rewrapAll(["acme.rotate", "acme.absent"]), 1);
    assert.equal(await rotating.rewrapAll(["acme.rotate"]), 0, "already on the new key");
    // The old key can now be removed from the config.
    assert.equal(await new GrantStore(kv, [newKey]).load("acme.rotate"), "grant-text");
  });
});
