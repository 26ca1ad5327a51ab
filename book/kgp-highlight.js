// Highlighting for the book's code blocks that highlight.js does not know: `kgp` (the patch
// language: Rust with a few items of its own) and `console` (a transcript: the prompt is
// marked, the rest is shown as the tools printed it).
(function () {
    if (typeof hljs === "undefined") {
        return;
    }
    hljs.registerLanguage("kgp", function (hljs) {
        return {
            name: "kgp",
            keywords: {
                keyword:
                    "patch extern shadow replace module on in fn static mut const let if else match state param syscall " +
                    "return while loop for break continue unsafe as use pub struct enum impl where c",
                literal: "true false",
                built_in:
                    "c_char c_int c_uint c_long c_ulong c_longlong c_ulonglong c_short c_ushort c_void " +
                    "c_schar c_uchar u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize bool size_t " +
                    "ssize_t loff_t gfp_t CStr",
            },
            contains: [
                hljs.COMMENT("//", "$"),
                hljs.COMMENT("/\\*", "\\*/", { contains: ["self"] }),
                { className: "string", begin: /c?b?r?"/, end: /"/, contains: [hljs.BACKSLASH_ESCAPE] },
                { className: "number", begin: /\b(0x[0-9a-fA-F_]+|[0-9][0-9_]*)\b/ },
                { className: "meta", begin: /#\[/, end: /\]/ },
                { className: "title", begin: /\b(pre|post)_(un)?patch\b/ },
                { className: "built_in", begin: /\bshadow!/ },
            ],
        };
    });
    hljs.registerLanguage("console", function () {
        return { name: "console", contains: [{ className: "meta", begin: /^[$#] /, relevance: 10 }] };
    });
    document.querySelectorAll("code.language-kgp, code.language-console").forEach(function (block) {
        block.classList.remove("hljs");
        block.innerHTML = block.textContent
            .replace(/&/g, "&amp;")
            .replace(/</g, "&lt;")
            .replace(/>/g, "&gt;");
        hljs.highlightBlock(block);
    });
})();
