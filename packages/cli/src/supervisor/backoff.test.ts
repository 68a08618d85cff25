import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { restartDelay } from "./backoff.js";

describe("restartDelay", () => {
  const options = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

  it("doubles per consecutive failure and stops at the cap", () => {
    const mid = () => 0.5; // no jitter
    assert.deepEqual([1, 2, 3, 4, 7, 8, 50].map((n) => restartDelay(n, options, mid)), [500, 1000, 2000, 4000, 30_000, 30_000, 30_000]);
  });

  it("spreads delays by the jitter fraction without exceeding the cap", () => {
    assert.equal(restartDelay(1, options, () => 0), 400);
    assert.equal(restartDelay(1, options, () => 1), 600);
    assert.equal(restartDelay(20, options, () => 1), 30_000);
  });
});
