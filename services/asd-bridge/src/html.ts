import sanitizeHtml from "sanitize-html";

/**
 * Makes a customer's HTML safe to show an agent: no scripts, no event handlers, no forms or
 * frames, no remote content (images, stylesheets, fonts would tell the sender that and when the
 * mail was read, and could carry exploits). Inline images come as `data:` URLs or `cid:`
 * references, which `inline` maps to our own attachment URLs. Style attributes and <style> are
 * dropped too: CSS can fetch remote URLs (`background: url(...)`) and an allowlist of CSS
 * properties was more than the agent desktop needs.
 *
 * Rejected: writing our own tag filter (HTML parsing quirks are where sanitizers fail) and
 * DOMPurify with jsdom (a whole DOM on the server for the same result). The desktop also shows
 * the result in a sandboxed iframe without scripts, under a strict CSP: defence in depth.
 */
export function sanitizeEmailHtml(html: string, inline: (cid: string) => string | undefined = () => undefined): string {
  return sanitizeHtml(html, {
    allowedTags: [
      ...sanitizeHtml.defaults.allowedTags.filter((t) => t !== "style"),
      "img", "font", "center", "u", "s", "strike", "small", "big", "sub", "sup",
    ],
    allowedAttributes: {
      a: ["href", "title", "name", "target", "rel"],
      img: ["src", "alt", "title", "width", "height"],
      td: ["colspan", "rowspan", "align", "valign", "width"],
      th: ["colspan", "rowspan", "align", "valign", "width"],
      table: ["width", "border", "cellpadding", "cellspacing", "align"],
      font: ["color", "size", "face"],
      "*": ["dir", "lang"],
    },
    allowedSchemes: ["http", "https", "mailto", "tel"],
    allowedSchemesByTag: { img: ["data", "cid"] },
    allowProtocolRelative: false,
    disallowedTagsMode: "discard",
    nonTextTags: ["script", "style", "textarea", "option", "noscript", "title", "head"],
    transformTags: {
      a: (tagName, attribs) => ({ tagName, attribs: { ...attribs, target: "_blank", rel: "noopener noreferrer nofollow" } }),
      img: (tagName, attribs) => {
        const src = attribs.src ?? "";
        if (src.toLowerCase().startsWith("cid:")) {
          const url = inline(src.slice(4).replace(/^<|>$/g, ""));
          // An inline part we do not have is dropped by the filter below, like a remote image.
          return { tagName, attribs: { ...attribs, src: url ?? "" } };
        }
        return { tagName, attribs };
      },
    },
    exclusiveFilter: (frame) => frame.tag === "img" && !/^(data:image\/|\/api\/)/i.test(frame.attribs.src ?? ""),
  });
}
