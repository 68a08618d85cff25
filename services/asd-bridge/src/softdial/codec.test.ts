import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom as rng } from "@postroom/testkit";
import { CUT_MARK, decodeFrame, decodeValue, encodeFrame, encodeValue, frameBytes, frameProblems, FrameReader, limitOf, param, wellFormed, type SdmpEncoding } from "./codec.js";


/** Characters mail really carries, and the ones that break protocols. */
const POOLS = [
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-_@#=,()[]{}$^`",
  "/\\:*?\"<>|&%+!';~",
  "\u0000\u0001\u0009\n\r\u001b\u007f\u0085\u009f\ufeff",
  "áéíóúàèçñüöäßøåłőžÆŒ",
  "абвгдежзийклмнопрЖЩЯ",
  "αβγδεζηθικλμΩΣΨ",
  "مرحبا بكم في الدعم",
  "שלום עולם תודה",
  "日本語の件名お問い合わせ中文客服한국어",
  "\u0301\u0308\u0327\u200f\u200e\u202e\u200d",
];
const ASTRAL = ["😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "𝄞", "𠜎"];

function randomText(next: () => number, maxLength: number): string {
  const n = Math.floor(next() * maxLength);
  let s = "";
  for (let i = 0; i < n; i++) {
    if (next() < 0.08) s += ASTRAL[Math.floor(next() * ASTRAL.length)];
    else {
      const pool = POOLS[Math.floor(next() * POOLS.length)]!;
      s += [...pool][Math.floor(next() * [...pool].length)];
    }
  }
  return s;
}

function icFor(subject: string, from: string, encoding: SdmpEncoding): string {
  return encodeFrame(
    { code: "IC", params: [["TD", "default"], ["CN", "system"], ["IC", "postroom"], ["SI", "s-1"], ["TN", from], ["DN", "support@acme.test"], ["MT", "email"], ["DT", subject]] },
    { encoding },
  );
}

for (const encoding of ["ascii", "utf16le"] as const) {
  test(`${encoding}: 2,000 random Unicode subjects and senders all make valid frames that decode to the original`, () => {
    const next = rng(encoding === "ascii" ? 6502 : 6500);
    for (let i = 0; i < 2000; i++) {
      const subject = randomText(next, i % 50 === 0 ? 3000 : 200);
      const from = `${randomText(next, 30) || "x"}@${randomText(next, 20) || "y"}.example`;
      const text = icFor(subject, from, encoding);
      assert.deepEqual(frameProblems(text, encoding), [], `seed case ${i}: ${JSON.stringify(text.slice(0, 200))}`);
      // Through the wire's bytes and back, split in two chunks anywhere.
      const bytes = frameBytes(text, encoding);
      const reader = new FrameReader(encoding);
      const cut = Math.floor(next() * bytes.length);
      const frames = [...reader.push(bytes.subarray(0, cut)), ...reader.push(bytes.subarray(cut))];
      assert.equal(frames.length, 1);
      const f = decodeFrame(frames[0]!);
      assert.equal(decodeValue(param(f, "TN")!), from, `case ${i} TN`);
      const dt = subject === "" ? undefined : decodeValue(param(f, "DT")!);
      assert.equal(dt, subject === "" ? undefined : wellFormed(subject), `case ${i} DT`);
    }
  });
}

test("a value too long for its parameter is cut at an escape boundary and marked, never rejected", () => {
  for (const encoding of ["ascii", "utf16le"] as const) {
    const long = "Ж😀".repeat(50_000);
    const v = encodeValue(long, encoding, "DT");
    assert.ok(v.length <= limitOf("DT")[1]);
    const back = decodeValue(v);
    assert.ok(back.endsWith(CUT_MARK), encoding);
    assert.ok(long.startsWith(back.slice(0, -1)), encoding);
    const si = encodeValue("x".repeat(500), encoding, "SI");
    assert.equal(si.length <= 120, true);
  }
});

test("an address keeps its meaning: o'brien+vip@ is escaped, not replaced, and stays address-like", () => {
  const v = encodeValue("o'brien+vip@example.com", "ascii", "TN");
  assert.equal(v, "o~27brien~2Bvip@example.com");
  assert.match(v, /^[A-Za-z0-9~.-]+@[A-Za-z0-9.-]+$/);
  assert.equal(decodeValue(v), "o'brien+vip@example.com");
  assert.equal(encodeValue("jürgen@müller.de", "utf16le", "TN"), "jürgen@müller.de", "UTF-16LE carries letters as they are");
  assert.equal(encodeValue("100% ~ sure", "utf16le"), "100~25 ~7E sure");
});

test("the validator names what CallGem would reject", () => {
  assert.deepEqual(frameProblems("IC\\ICpostroom\\SIs1\0", "ascii"), []);
  assert.match(frameProblems("IC\\ICpostroom\\TNcafé\0", "ascii").join(), /TN holds U\+00E9/);
  assert.deepEqual(frameProblems("IC\\ICpostroom\\TNcafé\0", "utf16le"), []);
  assert.match(frameProblems("IC\\ICpostroom\\DTa;b\0", "utf16le").join(), /forbidden/);
  assert.match(frameProblems("MV\\TK1\0", "ascii").join(), /not sent by the media layer/);
  assert.match(frameProblems("IC\\ICpostroom\\XX1\0", "ascii").join(), /does not take/);
  assert.match(frameProblems("ND\\SIs1\0", "ascii").join(), /lacks CA/);
  assert.match(frameProblems("IC\\ICpostroom\\SI\0", "ascii").join(), /SI is 0 characters/);
  assert.match(frameProblems("IC\\ICpostroom", "ascii").join(), /NUL/);
  assert.throws(() => encodeFrame({ code: "MV", params: [["TK", "1"]] }), /not sent by the media layer/);
});

test("input is read liberally: SDMP 2 routes, unknown parameters, quoted FM, frames split and joined across chunks", () => {
  const reader = new FrameReader("utf16le");
  const bytes = frameBytes("CG:CT:CT\\CNcamp\\ANjosé\\AEext-1\\ZZnew\0DA\0ER\\EC901\\FM\"IC\\SIs-9\\TNx\"\\MS\"bad\"\0", "utf16le");
  const frames: string[] = [];
  for (let i = 0; i < bytes.length; i += 3) frames.push(...reader.push(bytes.subarray(i, i + 3)));
  assert.equal(frames.length, 3);
  const ct = decodeFrame(frames[0]!);
  assert.equal(ct.route, "CG:CT:");
  assert.equal(ct.code, "CT");
  assert.equal(param(ct, "AN"), "josé");
  assert.equal(param(ct, "ZZ"), "new");
  assert.equal(decodeFrame(frames[1]!).code, "DA");
  const er = decodeFrame(frames[2]!);
  assert.equal(param(er, "FM"), "IC\\SIs-9\\TNx");
  assert.equal(param(er, "MS"), "bad");
});
