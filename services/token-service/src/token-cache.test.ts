import assert from "node:assert/strict";
import { test } from "node:test";
import { TokenCache, TokenUnavailableError } from "./token-cache.js";
import type { AccessToken, TokenSource } from "./providers.js";

/** A token source whose answers the test scripts; counts what the identity platform would see. */
class ScriptedSource implements TokenSource {
  calls = 0;
  failWith: unknown[] = [];
  constructor(
    private readonly now: () => number,
    private readonly lifetimeMs: number,
    private readonly delayMs = 0,
  ) {}
  async acquire(): Promise<AccessToken> {
    this.calls++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    const failure = this.failWith.shift();
    if (failure !== undefined) throw failure;
    return { token: `token-${this.calls}`, expiresAt: new Date(this.now() + this.lifetimeMs) };
  }
}

test("50 concurrent requests cause one fetch and all get the same token", async () => {
  const source = new ScriptedSource(Date.now, 3_600_000, 50);
  const cache = new TokenCache({ source });
  const tokens = await Promise.all(Array.from({ length: 50 }, () => cache.get()));
  assert.equal(source.calls, 1);
  assert.deepEqual(new Set(tokens.map((t) => t.token)), new Set(["token-1"]));
});

test("a cached token is served until the refresh window, then refreshed in the background", async () => {
  let now = 1_000_000;
  const source = new ScriptedSource(() => now, 60_000);
  const cache = new TokenCache({ source, now: () => now });
  assert.equal((await cache.get()).token, "token-1");
  now += 20_000; // 40 s left of 60: outside the refresh window (30 s)
  assert.equal((await cache.get()).token, "token-1");
  assert.equal(source.calls, 1);
  now += 15_000; // 25 s left: inside the window; the caller still gets the valid token
  assert.equal((await cache.get()).token, "token-1");
  await new Promise((r) => setImmediate(r));
  assert.equal(source.calls, 2);
  assert.equal((await cache.get()).token, "token-2");
});

test("a token too close to expiry is never served", async () => {
  let now = 0;
  const source = new ScriptedSource(() => now, 4_000);
  const cache = new TokenCache({ source, now: () => now });
  await cache.get();
  now += 3_500; // 0.5 s left of 4 s: less than a quarter
  assert.equal((await cache.get()).token, "token-2");
});

test("rejected: concurrent forced requests share one fresh token", async () => {
  const source = new ScriptedSource(Date.now, 3_600_000, 30);
  const cache = new TokenCache({ source });
  await cache.get();
  await new Promise((r) => setTimeout(r, 1_050)); // past the one-second "already fresh" grace
  const tokens = await Promise.all(Array.from({ length: 10 }, () => cache.get(true)));
  assert.equal(source.calls, 2);
  assert.deepEqual(new Set(tokens.map((t) => t.token)), new Set(["token-2"]));
});

test("after a transient failure the platform is not asked again until the backoff ends", async () => {
  let now = 0;
  const source = new ScriptedSource(() => now, 3_600_000);
  source.failWith.push(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
  const cache = new TokenCache({ source, now: () => now, baseBackoffMs: 1_000, random: () => 1 });
  await assert.rejects(cache.get(), (e: unknown) => e instanceof TokenUnavailableError && e.failure.kind === "transient");
  await assert.rejects(cache.get(), TokenUnavailableError);
  assert.equal(source.calls, 1);
  now += 1_001;
  assert.equal((await cache.get()).token, "token-2");
});

test("a needs-admin failure is not retried in a loop, even when a caller says rejected", async () => {
  let now = 0;
  const source = new ScriptedSource(() => now, 3_600_000);
  source.failWith.push(Object.assign(new Error("AADSTS7000215: Invalid client secret provided."), { errorCode: "invalid_client", status: 401 }));
  const cache = new TokenCache({ source, now: () => now, needsAdminRetryMs: 60_000 });
  await assert.rejects(cache.get(), (e: unknown) => e instanceof TokenUnavailableError && e.failure.code === "AADSTS7000215");
  for (let i = 0; i < 5; i++) await assert.rejects(cache.get(true), TokenUnavailableError);
  assert.equal(source.calls, 1);
  now += 60_001;
  assert.equal((await cache.get()).token, "token-2");
});

test("when a refresh fails, a token that still has some life is served rather than none", async () => {
  let now = 0;
  const source = new ScriptedSource(() => now, 60_000);
  const cache = new TokenCache({ source, now: () => now, random: () => 1 });
  await cache.get();
  source.failWith.push(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
  now += 50_000; // 10 s left of 60: below the 15 s serving margin, above the 6 s last resort
  assert.equal((await cache.get()).token, "token-1");
  now += 5_000; // 5 s left: not even as a last resort; the backoff (1 s) is over, so it fetches again
  assert.equal((await cache.get()).token, "token-3");
});
