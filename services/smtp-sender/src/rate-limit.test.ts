import assert from "node:assert/strict";
import { test } from "node:test";
import { SendRateLimiter } from "./rate-limit.js";

test("a mailbox gets its messages per minute, then waits until the oldest send leaves the window", () => {
  const limiter = new SendRateLimiter(() => 3);
  assert.equal(limiter.take("acme/support", 0), 0);
  assert.equal(limiter.take("acme/support", 10_000), 0);
  assert.equal(limiter.take("acme/support", 20_000), 0);
  assert.equal(limiter.take("acme/support", 30_000), 30_000, "the 4th waits until the first is a minute old");
  assert.equal(limiter.take("acme/sales", 30_000), 0, "other mailboxes are not affected");
  assert.equal(limiter.take("acme/support", 60_001), 0);
});

test("a released slot (the send never reached the server) can be used again", () => {
  const limiter = new SendRateLimiter(() => 1);
  assert.equal(limiter.take("k", 5), 0);
  assert.ok(limiter.take("k", 6) > 0);
  limiter.release("k", 5);
  assert.equal(limiter.take("k", 7), 0);
});
