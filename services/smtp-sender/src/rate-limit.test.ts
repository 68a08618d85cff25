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

test("recipients count: a forward to many uses up the minute's recipients, and the next waits until they leave the window", () => {
  const limiter = new SendRateLimiter(() => ({ messages: 30, recipients: 100 }));
  assert.equal(limiter.take("k", 0, 60), 0);
  assert.equal(limiter.take("k", 1_000, 40), 0, "exactly the 100");
  assert.equal(limiter.take("k", 2_000, 1), 58_000, "one more waits until the 60 leave the window");
  assert.equal(limiter.take("k", 60_001, 60), 0, "room for 60 once the first left");
  assert.equal(limiter.take("k", 60_002, 40), 998, "40 more wait for the 40 sent at 1 s to leave");
  assert.equal(limiter.take("k", 60_002, 41), 59_999, "41 do not fit beside the 60: they wait for those too");
});

test("a message with more recipients than the window allows goes when the window is empty, never held for ever", () => {
  const limiter = new SendRateLimiter(() => ({ messages: 30, recipients: 10 }));
  assert.equal(limiter.take("k", 0, 50), 0);
  assert.equal(limiter.take("k", 1, 1), 59_999);
  assert.equal(limiter.take("k", 60_000, 50), 0);
});
