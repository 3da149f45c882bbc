<?php
// Encrypted webhook bodies made exactly the way a PHP sender makes them, e.g. VCC Live, whose
// sample receiver is `openssl_decrypt($body, 'aes-256-ctr', $secretKey, 0, hex2bin($_GET['iv']))`.
// The sender side is `openssl_encrypt($plaintext, $cipher, $key, 0, $iv[, $tag])` (options 0 =
// base64 output). Run by tests/decrypt.rs with the real php-cli at test time; prints JSON.
//
// For every cipher: an exact-length key, a short key (PHP NUL-pads it) and a long key (PHP
// truncates it); a random IV (sent hex-encoded in ?iv=) and an all-zero IV (the "random IV"
// option off: no iv parameter at all); for GCM also a 16-byte IV, and the tag (sent in ?tag=).

error_reporting(E_ALL & ~E_WARNING);

$plaintext = json_encode([
    "event" => "call_ended",
    "call_id" => 98765,
    "agent" => "Zoë Kovács",
    "disposition" => "sale",
    "notes" => str_repeat("long enough to span several blocks; ", 4),
], JSON_UNESCAPED_UNICODE);

$ciphers = [
    "aes-128-cbc", "aes-192-cbc", "aes-256-cbc",
    "aes-128-ctr", "aes-192-ctr", "aes-256-ctr",
    "aes-128-gcm", "aes-192-gcm", "aes-256-gcm",
];

$vectors = [];
foreach ($ciphers as $cipher) {
    $key_len = intdiv((int) substr($cipher, 4, 3), 8);
    $keys = [
        "exact" => substr(bin2hex(random_bytes($key_len)), 0, $key_len),
        "short" => "short-key",
        "long" => bin2hex(random_bytes($key_len)) . "-and-more",
    ];
    $gcm = str_ends_with($cipher, "gcm");
    foreach ($keys as $kind => $key) {
        $ivs = [["random", openssl_cipher_iv_length($cipher)], ["zero", $gcm ? 12 : 16]];
        if ($gcm) {
            $ivs[] = ["random", 16];
        }
        foreach ($ivs as [$iv_kind, $iv_len]) {
            $iv = $iv_kind === "random" ? random_bytes($iv_len) : str_repeat("\0", $iv_len);
            $tag = null;
            $body = $gcm
                ? openssl_encrypt($plaintext, $cipher, $key, 0, $iv, $tag)
                : openssl_encrypt($plaintext, $cipher, $key, 0, $iv);
            if ($body === false) {
                fwrite(STDERR, "openssl_encrypt failed for $cipher/$kind/$iv_kind/$iv_len\n");
                exit(1);
            }
            $vectors[] = [
                "cipher" => $cipher,
                "key_kind" => $kind,
                "key" => $key,
                "iv" => $iv_kind === "random" ? bin2hex($iv) : null,
                "tag" => $tag === null ? null : bin2hex($tag),
                "body" => $body,
            ];
        }
    }
}
echo json_encode(["php" => PHP_VERSION, "openssl" => OPENSSL_VERSION_TEXT, "plaintext" => $plaintext, "vectors" => $vectors], JSON_UNESCAPED_UNICODE);
