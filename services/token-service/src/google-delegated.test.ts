// The parts of Google's browser sign-in that never reach Google: the address token-service hands
// out, the redirect it accepts, and a sign-in under way, sealed in a real NATS KV bucket so any
// replica can finish it. The whole flow against the fake platform is test/e2e/auth-google.test.ts.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { KV } from "@nats-io/kv";
import { connectNats, openKv, type NatsConnection } from "@postroom/nats-kit";
import { cleanupNamespace, natsUrl, testNamespace } from "@postroom/testkit";
import { CredentialConfigError } from "./classify.js";
import { GoogleDelegatedSource, type GoogleDelegatedMailbox } from "./google-delegated.js";
import { GrantStore, grantKey } from "./grant-store.js";

const root = testNamespace("google-deleg");
const SECRET = "GOCSPX-unit-test-secret-value";
let nc: NatsConnection;
let kv: KV;
let store: GrantStore;

before(async () => {
  nc = await connectNats({ url: natsUrl(), name: "google-delegated-test" });
  kv = await openKv(nc, `${root}-oauth-grants`);
  store = new GrantStore(kv, [grantKey("g".repeat(8) + "-unit-test-key-encryption-key-0123456789")]);
});

after(async () => {
  await nc?.drain();
  await cleanupNamespace(natsUrl(), root).catch(() => undefined);
});

function source(over: Partial<GoogleDelegatedMailbox> = {}): GoogleDelegatedSource {
  return new GoogleDelegatedSource(
    {
      key: "acme.gmail",
      address: "shop.owner@gmail.test",
      clientId: "123-unit.apps.googleusercontent.com",
      clientSecret: () => Promise.resolve(SECRET),
      scopes: ["https://mail.google.com/"],
      authorizeUrl: "https://accounts.example.test/o/oauth2/v2/auth",
      tokenUrl: "https://oauth2.example.test/token",
      signInCommand: "postroom auth sign-in --config /etc/postroom.yaml --mailbox acme/gmail",
      ...over,
    },
    store,
  );
}

async function rejects(work: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(work, (e: unknown) => e instanceof CredentialConfigError && e.code === code);
}

describe("Google's browser sign-in in token-service", () => {
  it("hands out an address with PKCE (S256), a state, offline access, consent, the mailbox as login hint, and no secret", async () => {
    const { authorizationUrl } = await source().startBrowserSignIn("s1", "http://127.0.0.1:51234/");
    const url = new URL(authorizationUrl);
    assert.equal(url.origin + url.pathname, "https://accounts.example.test/o/oauth2/v2/auth");
    const q = url.searchParams;
    assert.deepEqual(
      [q.get("response_type"), q.get("client_id"), q.get("redirect_uri"), q.get("access_type"), q.get("prompt"), q.get("login_hint"), q.get("code_challenge_method")],
      ["code", "123-unit.apps.googleusercontent.com", "http://127.0.0.1:51234/", "offline", "consent", "shop.owner@gmail.test", "S256"],
    );
    assert.deepEqual(q.get("scope")?.split(" ").sort(), ["email", "https://mail.google.com/", "openid"]);
    assert.ok((q.get("state") ?? "").length >= 32, "an unguessable state");
    assert.match(q.get("code_challenge") ?? "", /^[A-Za-z0-9_-]{43}$/);
    assert.ok(!authorizationUrl.includes(SECRET));
  });

  it("keeps the sign-in sealed in the store: the verifier is in no stored byte, and it matches the challenge sent", async () => {
    const { authorizationUrl } = await source().startBrowserSignIn("s2", "http://127.0.0.1:51235/");
    const raw = (await kv.get("acme.gmail=sign-in"))!.string();
    const pending = JSON.parse((await store.load("acme.gmail=sign-in"))!) as { codeVerifier: string; state: string };
    assert.ok(!raw.includes(pending.codeVerifier) && !raw.includes(pending.state), "sealed, not in clear");
    const q = new URL(authorizationUrl).searchParams;
    assert.equal(createHash("sha256").update(pending.codeVerifier).digest("base64url"), q.get("code_challenge"));
    assert.equal(pending.state, q.get("state"));
  });

  it("refuses a redirect that is not a loopback http address", async () => {
    for (const uri of ["https://evil.example/cb", "http://192.168.1.4:8080/", "http://127.0.0.1.evil.example/", "javascript:alert(1)"]) {
      await rejects(source().startBrowserSignIn("s3", uri), "redirect-invalid");
    }
  });

  it("a redirect with another sign-in's state or id finishes nothing, and leaves the real sign-in waiting; an expired one is gone", async () => {
    const s = source();
    await s.startBrowserSignIn("s4", "http://[::1]:51236/");
    await rejects(s.completeBrowserSignIn("s4", "forged-state", "4/code"), "state-mismatch");
    await rejects(s.completeBrowserSignIn("someone-else", "forged-state", "4/code"), "sign-in-unknown");
    assert.ok(await store.load("acme.gmail=sign-in"), "still waiting for the real redirect");
    const quick = source({ signInTtlMs: 1 });
    await quick.startBrowserSignIn("s5", "http://localhost:51237/");
    await new Promise((r) => setTimeout(r, 5));
    await rejects(quick.completeBrowserSignIn("s5", "any", "4/code"), "sign-in-expired");
    assert.equal(await store.load("acme.gmail=sign-in"), undefined);
  });

  it("without a stored grant, a token request says the mailbox has not been signed in and names the command", async () => {
    await assert.rejects(source({ key: "acme.nobody" }).acquire(), (e: unknown) => e instanceof CredentialConfigError && e.code === "not-signed-in" && e.fix.includes("postroom auth sign-in --config /etc/postroom.yaml --mailbox acme/gmail"));
  });
});
