import assert from "node:assert/strict";
import { test } from "node:test";
import { isDatabaseUnavailable, untilDatabaseAnswers } from "./unavailable.js";

test("untilDatabaseAnswers waits out a database that is not there and throws a wrong statement at once", async () => {
  let calls = 0;
  const waits: number[] = [];
  const value = await untilDatabaseAnswers(
    async () => {
      calls++;
      if (calls === 1) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
      if (calls === 2) throw Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" });
      return "written";
    },
    (_e, attempt) => waits.push(attempt),
  );
  assert.equal(value, "written");
  assert.deepEqual(waits, [1, 2]);
  const wrong = Object.assign(new Error('relation "nope" does not exist'), { code: "42P01" });
  assert.equal(isDatabaseUnavailable(wrong), false);
  await assert.rejects(untilDatabaseAnswers(async () => Promise.reject(wrong)), /does not exist/);
});
