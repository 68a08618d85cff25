import assert from "node:assert/strict";
import { test } from "node:test";
import { sanitizeEmailHtml } from "./html.js";

test("scripts, event handlers, remote images and javascript links are stripped from email HTML", () => {
  const out = sanitizeEmailHtml(
    `<p onclick="steal()">Hi <b>there</b></p><script>alert(1)</script><img src="x" onerror="alert(2)"><img src="https://tracker.example/p.gif">` +
      `<a href="javascript:alert(3)">x</a><a href="https://shop.example/order">order</a><iframe src="https://evil.example"></iframe>` +
      `<style>body{background:url(https://tracker.example/bg)}</style><div style="background:url(https://t.example)">s</div><form action="/x"><input></form>`,
  );
  assert.doesNotMatch(out, /script|onerror|onclick|alert|tracker|iframe|javascript|style|form|input/i);
  assert.match(out, /<p>Hi <b>there<\/b><\/p>/);
  assert.match(out, /<a href="https:\/\/shop.example\/order" target="_blank" rel="noopener noreferrer nofollow">order<\/a>/);
});

test("inline images resolve through our own attachment URLs; unknown cid references are dropped", () => {
  const out = sanitizeEmailHtml(`<img src="cid:logo@x" alt="logo"><img src="cid:missing" alt="gone"><img src="data:image/png;base64,iVBOR">`, (cid) =>
    cid === "logo@x" ? "/api/sessions/1/attachments/0" : undefined,
  );
  assert.match(out, /<img src="\/api\/sessions\/1\/attachments\/0" alt="logo" \/>/);
  assert.doesNotMatch(out, /gone|missing/);
  assert.match(out, /data:image\/png/);
});
