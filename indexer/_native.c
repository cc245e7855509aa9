/* indexer._native: the indexer's hot loops in C, each the twin of a pure-Python reference.
 *
 * The Python code stays the specification: indexer.abiwords.checksum,
 * indexer.writer._raw_rows and indexer.decode.LogDecoder._decode. What is here only takes
 * the well-formed common case faster. It is strict where Python is lenient: at the first
 * input it does not accept exactly as JSON-RPC promises (a type, a length, a character,
 * a callback that raised an Exception), it stops and says where, and the Python path
 * takes that input over, with its own result or its own error message. So a malformed
 * answer can never get a different value or a different error from here: only the same
 * one, later. tests/indexer/test_native.py checks the twins agree on random input.
 *
 * Built by setup.py as an optional extension: without a C compiler RTRM installs and runs
 * on the Python path (indexer.native says which one is in use).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ Keccak-256 */

static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL,
    0x8000000080008000ULL, 0x000000000000808bULL, 0x0000000080000001ULL,
    0x8000000080008081ULL, 0x8000000000008009ULL, 0x000000000000008aULL,
    0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL,
    0x8000000000008003ULL, 0x8000000000008002ULL, 0x8000000000000080ULL,
    0x000000000000800aULL, 0x800000008000000aULL, 0x8000000080008081ULL,
    0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};
/* rho offsets and pi positions, in the order the pi step visits lanes from lane 1 */
static const int RHO[24] = {1,  3,  6,  10, 15, 21, 28, 36, 45, 55, 2,  14,
                            27, 41, 56, 8,  25, 43, 62, 18, 39, 61, 20, 44};
static const int PI[24] = {10, 7,  11, 17, 18, 3, 5,  16, 8,  21, 24, 4,
                           15, 23, 19, 13, 12, 2, 20, 14, 22, 9,  6,  1};

static inline uint64_t rotl64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

static void keccak_f1600(uint64_t s[25]) {
    uint64_t c[5], t;
    for (int round = 0; round < 24; round++) {
        for (int x = 0; x < 5; x++) c[x] = s[x] ^ s[x + 5] ^ s[x + 10] ^ s[x + 15] ^ s[x + 20];
        for (int x = 0; x < 5; x++) {
            t = c[(x + 4) % 5] ^ rotl64(c[(x + 1) % 5], 1);
            for (int y = 0; y < 25; y += 5) s[y + x] ^= t;
        }
        t = s[1];
        for (int i = 0; i < 24; i++) {
            int j = PI[i];
            uint64_t next = s[j];
            s[j] = rotl64(t, RHO[i]);
            t = next;
        }
        for (int y = 0; y < 25; y += 5) {
            for (int x = 0; x < 5; x++) c[x] = s[y + x];
            for (int x = 0; x < 5; x++) s[y + x] ^= (~c[(x + 1) % 5]) & c[(x + 2) % 5];
        }
        s[0] ^= ROUND_CONSTANTS[round];
    }
}

#define KECCAK_RATE 136 /* bytes: 1600 - 2 * 256 bits */

static void xor_block(uint64_t s[25], const unsigned char *block, size_t len) {
    for (size_t i = 0; i < len; i++) s[i / 8] ^= (uint64_t)block[i] << (8 * (i % 8));
}

/* Keccak-256 as Ethereum uses it (original padding 0x01, not SHA-3's 0x06). */
static void keccak256(const unsigned char *data, size_t len, unsigned char out[32]) {
    uint64_t s[25] = {0};
    unsigned char last[KECCAK_RATE] = {0};
    while (len >= KECCAK_RATE) {
        xor_block(s, data, KECCAK_RATE);
        keccak_f1600(s);
        data += KECCAK_RATE;
        len -= KECCAK_RATE;
    }
    memcpy(last, data, len);
    last[len] ^= 0x01;
    last[KECCAK_RATE - 1] ^= 0x80;
    xor_block(s, last, KECCAK_RATE);
    keccak_f1600(s);
    for (int i = 0; i < 32; i++) out[i] = (unsigned char)(s[i / 8] >> (8 * (i % 8)));
}

/* ------------------------------------------------------------------ hex */

static signed char HEX_VALUE[256], LOWER_HEX_VALUE[256]; /* -1: not a (lowercase) digit */
static const char HEX_DIGITS[] = "0123456789abcdef";

static void init_hex(void) {
    memset(HEX_VALUE, -1, sizeof HEX_VALUE);
    for (int i = 0; i < 10; i++) HEX_VALUE['0' + i] = (signed char)i;
    for (int i = 0; i < 6; i++) HEX_VALUE['a' + i] = (signed char)(10 + i);
    memcpy(LOWER_HEX_VALUE, HEX_VALUE, sizeof HEX_VALUE);
    for (int i = 0; i < 6; i++) HEX_VALUE['A' + i] = (signed char)(10 + i);
}

/* ``n`` bytes from ``2n`` digits read through ``table``; 0 if one is not a digit there. */
static inline int unhex_with(const signed char *table, const char *digits, Py_ssize_t n,
                             unsigned char *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        int hi = table[(unsigned char)digits[2 * i]];
        int lo = table[(unsigned char)digits[2 * i + 1]];
        if ((hi | lo) < 0) return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

/* ``n`` bytes from ``2n`` hex digits (either case); 0 if a character is not one. */
static int unhex(const char *digits, Py_ssize_t n, unsigned char *out) {
    return unhex_with(HEX_VALUE, digits, n, out);
}

/* The characters of an ASCII str that is "0x" + ``digits`` characters (any, when
 * ``digits`` < 0), else NULL. No error is set: the caller falls back to Python. */
static const char *hex_text(PyObject *value, Py_ssize_t digits, Py_ssize_t *length) {
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_COMPACT_ASCII(value)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    const char *text = (const char *)PyUnicode_DATA(value);
    if (n < 2 || text[0] != '0' || text[1] != 'x') return NULL;
    if (digits >= 0 && n != digits + 2) return NULL;
    if (length) *length = n - 2;
    return text + 2;
}

/* "0x" + 64 hex digits (a topic) -> ``out``; 0 otherwise. */
static int hex_word(PyObject *value, unsigned char out[32]) {
    const char *digits = hex_text(value, 64, NULL);
    return digits != NULL && unhex(digits, 32, out);
}

/* A block or transaction hash as nodes write it, "0x" + 64 lowercase hex digits, ->
 * ``out``; 0 otherwise (writer._raw_rows' rule: a block hash is kept as text and compared
 * with headers' hashes, so upper case would be a different hash). */
static int hash_word(PyObject *value, unsigned char out[32]) {
    const char *digits = hex_text(value, 64, NULL);
    return digits != NULL && unhex_with(LOWER_HEX_VALUE, digits, 32, out);
}

/* A JSON-RPC quantity, "0x" + 1..16 hex digits, into ``out``; 0 otherwise (Python's
 * QUANTITIES also takes up to 64 digits: those go to the Python path). */
static int parse_quantity(PyObject *value, uint64_t *out) {
    Py_ssize_t digits;
    const char *text = hex_text(value, -1, &digits);
    if (text == NULL || digits < 1 || digits > 16) return 0;
    uint64_t n = 0;
    for (Py_ssize_t i = 0; i < digits; i++) {
        int d = HEX_VALUE[(unsigned char)text[i]];
        if (d < 0) return 0;
        n = n << 4 | (uint64_t)d;
    }
    *out = n;
    return 1;
}

/* The same quantity as a new int; NULL otherwise (no error set, or a MemoryError). */
static PyObject *quantity(PyObject *value) {
    uint64_t n;
    return parse_quantity(value, &n) ? PyLong_FromUnsignedLongLong(n) : NULL;
}

/* ------------------------------------------------------------------ EIP-55 */

/* 40 hex digits -> "0x" + EIP-55 mixed case, as a new str; NULL (no error) if not hex. */
static PyObject *checksum_digits(const char *digits) {
    char lower[40];
    unsigned char digest[32];
    for (int i = 0; i < 40; i++) {
        unsigned char ch = (unsigned char)digits[i];
        if (HEX_VALUE[ch] < 0) return NULL;
        lower[i] = (char)(ch >= 'A' && ch <= 'F' ? ch + 32 : ch);
    }
    keccak256((const unsigned char *)lower, 40, digest);
    PyObject *out = PyUnicode_New(42, 127);
    if (out == NULL) return NULL;
    char *text = (char *)PyUnicode_DATA(out);
    text[0] = '0';
    text[1] = 'x';
    for (int i = 0; i < 40; i++) {
        int nibble = i % 2 ? digest[i / 2] & 0xf : digest[i / 2] >> 4;
        char ch = lower[i];
        text[2 + i] = (char)(ch >= 'a' && nibble >= 8 ? ch - 32 : ch);
    }
    return out;
}

static PyObject *native_keccak256(PyObject *module, PyObject *arg) {
    Py_buffer view;
    unsigned char digest[32];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    keccak256((const unsigned char *)view.buf, (size_t)view.len, digest);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

static PyObject *native_checksum(PyObject *module, PyObject *arg) {
    if (!PyUnicode_CheckExact(arg) || !PyUnicode_IS_COMPACT_ASCII(arg) ||
        PyUnicode_GET_LENGTH(arg) != 40) {
        PyErr_SetString(PyExc_ValueError, "checksum() takes 40 hex digits");
        return NULL;
    }
    PyObject *out = checksum_digits((const char *)PyUnicode_DATA(arg));
    if (out == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "checksum() takes 40 hex digits");
    return out;
}

/* ------------------------------------------------------------------ shared */

static PyObject *KEY_TOPICS, *KEY_DATA, *KEY_ADDRESS, *KEY_BLOCK_NUMBER, *KEY_BLOCK_HASH,
    *KEY_TX_HASH, *KEY_TX_INDEX, *KEY_LOG_INDEX, *KEY_REMOVED;

/* After a failed step: an Exception from a callback means "let Python take this log"
 * (cleared, returns 1); anything else (KeyboardInterrupt, ...) must propagate (0). */
static int fall_back(void) {
    if (!PyErr_Occurred()) return 1;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return 0;
    PyErr_Clear();
    return 1;
}

/* log[key], borrowed; NULL if log lacks it (no error set) or on an error. */
static PyObject *field(PyObject *log, PyObject *key) {
    return PyDict_GetItemWithError(log, key);
}

/* Two ASCII strs with the same characters (what ``!=`` on the previous log's value
 * decides in Python; anything else counts as different, which only costs a parse). */
static int same(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    if (a == NULL || b == NULL || !PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b) ||
        !PyUnicode_IS_COMPACT_ASCII(a) || !PyUnicode_IS_COMPACT_ASCII(b))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), n) == 0;
}

/* ------------------------------------------------------------------ raw rows */

/* A growing byte buffer for binary COPY rows (indexer.copyrows). */
typedef struct {
    char *data;
    size_t size, capacity;
} Buffer;

/* Room for ``more`` bytes at the end; 0 with a MemoryError set otherwise. */
static int reserve(Buffer *b, size_t more) {
    if (b->size + more <= b->capacity) return 1;
    size_t capacity = b->capacity ? b->capacity : 1 << 16;
    while (capacity < b->size + more) capacity *= 2;
    char *data = PyMem_Realloc(b->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->data = data;
    b->capacity = capacity;
    return 1;
}

/* Big-endian integers into reserved room. */
static void put_be(Buffer *b, uint64_t value, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) b->data[b->size++] = (char)(value >> (8 * i));
}

/* A field's length, then room for its value (the caller fills it); returns the value's
 * start. */
static unsigned char *put_field(Buffer *b, uint32_t length) {
    put_be(b, length, 4);
    unsigned char *at = (unsigned char *)b->data + b->size;
    b->size += length;
    return at;
}

static void put_int_field(Buffer *b, uint64_t value, int bytes) {
    put_be(b, (uint64_t)bytes, 4);
    put_be(b, value, bytes);
}

#define RAW_FIELDS 8
#define INT32_LIMIT 0x7fffffffULL
#define INT64_LIMIT 0x7fffffffffffffffULL

/* raw_rows(chain_id, logs) -> (packed, blocks) | None, as indexer.writer._raw_rows: the
 * rows as binary COPY tuples of indexer.writer.RAW_KINDS. None when a log is not exactly
 * what JSON-RPC promises or a quantity does not fit its column (Python then does the whole
 * batch, with its own error). */
static PyObject *native_raw_rows(PyObject *module, PyObject *args) {
    PyObject *chain, *logs;
    if (!PyArg_ParseTuple(args, "OO!", &chain, &PyList_Type, &logs)) return NULL;
    Buffer out = {NULL, 0, 0};
    PyObject *blocks = PyDict_New();
    PyObject *last_block = NULL, *last_hash = NULL, *last_tx = NULL;
    uint64_t number = 0;
    unsigned char tx_hash[32], block_word[32];
    if (blocks == NULL) return NULL;
    int overflow = 0;
    long long chain_id = PyLong_CheckExact(chain) ? PyLong_AsLongLongAndOverflow(chain, &overflow)
                                                  : -1;
    if (!PyLong_CheckExact(chain) || overflow || (chain_id == -1 && PyErr_Occurred())) goto python;
    Py_ssize_t count = PyList_GET_SIZE(logs);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *log = PyList_GET_ITEM(logs, i);
        if (!PyDict_CheckExact(log)) goto python;
        PyObject *block_hex = field(log, KEY_BLOCK_NUMBER);
        PyObject *block_hash = field(log, KEY_BLOCK_HASH);
        PyObject *tx = field(log, KEY_TX_HASH);
        PyObject *topics = field(log, KEY_TOPICS);
        PyObject *log_index = field(log, KEY_LOG_INDEX);
        PyObject *tx_index = field(log, KEY_TX_INDEX);
        PyObject *address = field(log, KEY_ADDRESS);
        PyObject *data = field(log, KEY_DATA);
        if (!block_hex || !block_hash || !tx || !topics || !log_index || !tx_index || !address ||
            !data)
            goto python;
        /* every log's block hash, not only a block's first: the last one's is the cursor's */
        if (!same(block_hash, last_hash)) {
            if (!hash_word(block_hash, block_word)) goto python;
            last_hash = block_hash;
        }
        if (!same(block_hex, last_block)) {
            if (!parse_quantity(block_hex, &number) || number > INT64_LIMIT) goto python;
            PyObject *key = PyLong_FromUnsignedLongLong(number);
            if (key == NULL) goto python;
            int failed = PyDict_SetItem(blocks, key, block_hash);
            Py_DECREF(key);
            if (failed) goto python;
            last_block = block_hex;
        }
        if (!same(tx, last_tx)) {
            if (!hash_word(tx, tx_hash)) goto python;
            last_tx = tx;
        }
        uint64_t log_number, tx_number;
        Py_ssize_t data_digits;
        const char *address_digits = hex_text(address, 40, NULL);
        const char *data_text = hex_text(data, -1, &data_digits);
        if (!PyList_CheckExact(topics) || address_digits == NULL || data_text == NULL ||
            data_digits % 2 || (uint64_t)data_digits / 2 > INT32_LIMIT ||
            !parse_quantity(log_index, &log_number) || log_number > INT32_LIMIT ||
            !parse_quantity(tx_index, &tx_number) || tx_number > INT32_LIMIT)
            goto python;
        Py_ssize_t topic_count = PyList_GET_SIZE(topics);
        if (topic_count > 4) goto python; /* the EVM's most; Python takes any count */
        size_t data_bytes = (size_t)data_digits / 2;
        if (!reserve(&out, 2 + RAW_FIELDS * 4 + 8 + 8 + 4 + 32 + 4 + 20 + 32 * topic_count +
                               data_bytes))
            goto error;
        size_t row_start = out.size;
        put_be(&out, RAW_FIELDS, 2);
        put_int_field(&out, (uint64_t)chain_id, 8);
        put_int_field(&out, number, 8);
        put_int_field(&out, log_number, 4);
        memcpy(put_field(&out, 32), tx_hash, 32);
        put_int_field(&out, tx_number, 4);
        int ok = unhex(address_digits, 20, put_field(&out, 20));
        unsigned char *topic_out = put_field(&out, (uint32_t)(32 * topic_count));
        for (Py_ssize_t t = 0; ok && t < topic_count; t++)
            ok = hex_word(PyList_GET_ITEM(topics, t), topic_out + 32 * t);
        ok = ok && unhex(data_text, (Py_ssize_t)data_bytes, put_field(&out, (uint32_t)data_bytes));
        if (!ok) {
            out.size = row_start;
            goto python;
        }
    }
    PyObject *packed = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.size);
    PyMem_Free(out.data);
    if (packed == NULL) {
        Py_DECREF(blocks);
        return NULL;
    }
    return Py_BuildValue("(NN)", packed, blocks);
python:
    if (!fall_back()) goto error;
    PyMem_Free(out.data);
    Py_DECREF(blocks);
    Py_RETURN_NONE;
error:
    PyMem_Free(out.data);
    Py_DECREF(blocks);
    return NULL;
}

/* unpack(data, kinds) -> rows, as indexer.copyrows.unpack_python (same errors). */
static PyObject *native_unpack(PyObject *module, PyObject *args) {
    Py_buffer view;
    const char *kinds;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*s#", &view, &kinds, &width)) return NULL;
    PyObject *rows = PyList_New(0);
    PyObject *row = NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t at = 0, end = view.len;
    if (rows == NULL) goto error;
    for (Py_ssize_t k = 0; k < width; k++) {
        if (kinds[k] != 'q' && kinds[k] != 'i' && kinds[k] != 'b') {
            PyObject *kind = PyUnicode_FromStringAndSize(kinds + k, 1);
            PyObject *all = PyUnicode_FromStringAndSize(kinds, width);
            if (kind && all)
                PyErr_Format(PyExc_ValueError, "unknown column kind %R in %R: use q, i or b",
                             kind, all);
            Py_XDECREF(kind);
            Py_XDECREF(all);
            goto error;
        }
    }
    while (at < end) {
        if (end - at < 2) goto truncated;
        int16_t fields = (int16_t)(data[at] << 8 | data[at + 1]);
        if (fields != width) {
            PyErr_Format(PyExc_ValueError, "a row of %d fields at byte %zd, expected %zd",
                         (int)fields, at, width);
            goto error;
        }
        at += 2;
        row = PyTuple_New(width);
        if (row == NULL) goto error;
        for (Py_ssize_t k = 0; k < width; k++) {
            if (end - at < 4) goto truncated;
            int32_t size = (int32_t)((uint32_t)data[at] << 24 | (uint32_t)data[at + 1] << 16 |
                                     (uint32_t)data[at + 2] << 8 | data[at + 3]);
            at += 4;
            char kind = kinds[k];
            int expected = kind == 'q' ? 8 : kind == 'i' ? 4 : size;
            if (size != expected || size < 0 || size > end - at) {
                PyErr_Format(PyExc_ValueError, "a field of %d bytes at byte %zd ('%c')",
                             (int)size, at - 4, kind);
                goto error;
            }
            PyObject *value;
            if (kind == 'b') {
                value = PyBytes_FromStringAndSize((const char *)data + at, size);
            } else {
                uint64_t n = 0;
                for (int b = 0; b < size; b++) n = n << 8 | data[at + b];
                value = kind == 'q' ? PyLong_FromLongLong((long long)n)
                                    : PyLong_FromLong((long)(int32_t)(uint32_t)n);
            }
            if (value == NULL) goto error;
            PyTuple_SET_ITEM(row, k, value);
            at += size;
        }
        if (PyList_Append(rows, row) < 0) goto error;
        Py_CLEAR(row);
    }
    PyBuffer_Release(&view);
    return rows;
truncated:
    PyErr_Format(PyExc_ValueError, "truncated at byte %zd of %zd", at, end);
error:
    Py_XDECREF(row);
    Py_XDECREF(rows);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------ decoding */

/* How one parameter is read (indexer.decode's _generate, op by op). */
enum {
    OP_TOPIC_ADDRESS = 0, /* topic -> cached checksummed address */
    OP_TOPIC_BOOL = 1,    /* topic -> BOOL_TOPICS[topic] */
    OP_ADDRESS = 2,       /* word -> cached checksummed address */
    OP_BOOL = 3,          /* word 0 or 1 */
    OP_UINT = 4,          /* word -> int, < 2**size */
    OP_INT = 5,           /* word -> int, sign-extended from size bits */
    OP_BYTES = 6,         /* word -> "0x" + hex of its first size bytes, rest zero */
    OP_CALL = 7,          /* word -> helper(word), in Python */
};
#define MAX_WORDS 64

typedef struct {
    PyObject *topic_cache, *topic_miss, *word_cache, *word_miss, *bool_topics;
    Py_ssize_t limit; /* entries per address cache: when full, Python's miss evicts */
} Caches;

/* ``word`` as int: unsigned, or two's complement. */
static PyObject *word_int(const unsigned char *word, int is_signed) {
    int negative = is_signed && (word[0] & 0x80);
    unsigned char fill = negative ? 0xff : 0;
    int small = 1;
    for (int i = 0; i < 24 && small; i++) small = word[i] == fill;
    if (small && (!is_signed || ((word[24] & 0x80) != 0) == negative)) {
        uint64_t n = 0;
        for (int i = 24; i < 32; i++) n = n << 8 | word[i];
        return is_signed ? PyLong_FromLongLong((long long)n) : PyLong_FromUnsignedLongLong(n);
    }
#if PY_VERSION_HEX >= 0x030D0000
    int flags = Py_ASNATIVEBYTES_BIG_ENDIAN | (is_signed ? 0 : Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
    return is_signed ? PyLong_FromNativeBytes(word, 32, flags)
                     : PyLong_FromUnsignedNativeBytes(word, 32, flags);
#else
    return _PyLong_FromByteArray(word, 32, 0, is_signed);
#endif
}

/* "0x" + lowercase hex of ``n`` bytes, as a new str. */
static PyObject *hex_str(const unsigned char *raw, int n) {
    PyObject *out = PyUnicode_New(2 + 2 * n, 127);
    if (out == NULL) return NULL;
    char *text = (char *)PyUnicode_DATA(out);
    text[0] = '0';
    text[1] = 'x';
    for (int i = 0; i < n; i++) {
        text[2 + 2 * i] = HEX_DIGITS[raw[i] >> 4];
        text[3 + 2 * i] = HEX_DIGITS[raw[i] & 0xf];
    }
    return out;
}

/* A cached value, or miss(key) (a new reference either way); NULL on a miss that raised.
 * (Cached values are checksummed addresses, never empty: Python's ``get(k) or miss(k)``.) */
static PyObject *cached(PyObject *cache, PyObject *miss, PyObject *key) {
    PyObject *value = PyDict_GetItemWithError(cache, key);
    if (value != NULL) return Py_NewRef(value);
    if (PyErr_Occurred()) return NULL;
    return PyObject_CallOneArg(miss, key);
}

/* The cached checksummed address for ``key``: a topic (``word`` NULL: the topic is parsed
 * only on a miss) or a data word's bytes (``word``: those bytes). On a miss the address is
 * computed here and remembered while the cache has room; a full one is Python's to evict
 * (``miss``). NULL without an error when the topic is not 0x-hex or the upper 12 bytes are
 * not zero: Python's miss then says so. */
static PyObject *cached_address(PyObject *cache, PyObject *miss, PyObject *key,
                                const unsigned char *word, Py_ssize_t limit) {
    PyObject *value = PyDict_GetItemWithError(cache, key);
    if (value != NULL) return Py_NewRef(value);
    if (PyErr_Occurred()) return NULL;
    if (PyDict_GET_SIZE(cache) >= limit) return PyObject_CallOneArg(miss, key);
    unsigned char parsed[32];
    if (word == NULL) {
        if (!hex_word(key, parsed)) return NULL;
        word = parsed;
    }
    char digits[40];
    for (int i = 0; i < 12; i++)
        if (word[i]) return NULL;
    for (int i = 0; i < 20; i++) {
        digits[2 * i] = HEX_DIGITS[word[12 + i] >> 4];
        digits[2 * i + 1] = HEX_DIGITS[word[12 + i] & 0xf];
    }
    PyObject *address = checksum_digits(digits);
    if (address == NULL || PyDict_SetItem(cache, key, address) < 0) {
        Py_XDECREF(address);
        return NULL;
    }
    return address;
}

/* The value of one word-op on 32 bytes; a new reference, or NULL: not ours to decide
 * (no error set) or a callback's error. */
static PyObject *word_value(int op, int size, PyObject *helper, const unsigned char *word,
                            const Caches *caches) {
    PyObject *key, *value;
    switch (op) {
    case OP_ADDRESS:
        key = PyBytes_FromStringAndSize((const char *)word, 32);
        if (key == NULL) return NULL;
        value = cached_address(caches->word_cache, caches->word_miss, key, word, caches->limit);
        Py_DECREF(key);
        return value;
    case OP_BOOL:
        for (int i = 0; i < 31; i++)
            if (word[i]) return NULL;
        if (word[31] > 1) return NULL;
        return PyBool_FromLong(word[31]);
    case OP_UINT:
    case OP_INT: {
        int high = 32 - size / 8; /* bytes above the value's own */
        unsigned char fill = 0;
        if (op == OP_INT && high < 32) fill = (word[high] & 0x80) ? 0xff : 0;
        for (int i = 0; i < high; i++)
            if (word[i] != fill) return NULL;
        return word_int(word, op == OP_INT);
    }
    case OP_BYTES:
        for (int i = size; i < 32; i++)
            if (word[i]) return NULL;
        return hex_str(word, size);
    case OP_CALL:
        key = PyBytes_FromStringAndSize((const char *)word, 32);
        if (key == NULL) return NULL;
        value = PyObject_CallOneArg(helper, key);
        Py_DECREF(key);
        return value;
    }
    return NULL;
}

/* args of one log from its plan: a new dict, or NULL (see word_value). ``ops`` is a tuple
 * of (name, op, from_topic, slot, size, helper); ``words`` the data's word count. */
static PyObject *decode_args(PyObject *ops, Py_ssize_t words, PyObject *topics, PyObject *data,
                             const Caches *caches) {
    unsigned char raw[32 * MAX_WORDS], topic_word[32];
    if (words == 0) {
        if (!PyUnicode_CheckExact(data) || PyUnicode_GET_LENGTH(data) != 2 ||
            PyUnicode_CompareWithASCIIString(data, "0x") != 0)
            return NULL;
    } else {
        const char *digits = hex_text(data, 64 * words, NULL);
        if (digits == NULL || !unhex(digits, 32 * words, raw)) return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(ops);
    PyObject *args = PyDict_New();
    if (args == NULL) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *spec = PyTuple_GET_ITEM(ops, i);
        PyObject *name = PyTuple_GET_ITEM(spec, 0);
        int op = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        int from_topic = PyTuple_GET_ITEM(spec, 2) == Py_True;
        Py_ssize_t slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 3));
        int size = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 4));
        PyObject *helper = PyTuple_GET_ITEM(spec, 5);
        PyObject *value = NULL;
        if (from_topic) {
            PyObject *topic = PyList_GET_ITEM(topics, slot);
            if (op == OP_TOPIC_ADDRESS) {
                value = cached_address(caches->topic_cache, caches->topic_miss, topic, NULL,
                                       caches->limit);
            } else if (op == OP_TOPIC_BOOL) {
                value = Py_XNewRef(PyDict_GetItemWithError(caches->bool_topics, topic));
            } else if (hex_word(topic, topic_word)) {
                value = word_value(op, size, helper, topic_word, caches);
            }
        } else {
            value = word_value(op, size, helper, raw + 32 * slot, caches);
        }
        if (value == NULL || PyDict_SetItem(args, name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(args);
            return NULL;
        }
        Py_DECREF(value);
    }
    return args;
}

/* The 11 member descriptors of DecodedLog, in field order, and the type. */
#define DECODED_FIELDS 11
static PyTypeObject *decoded_type;
static PyObject *decoded_slots[DECODED_FIELDS];

static PyObject *new_decoded(PyObject *const values[DECODED_FIELDS]) {
    PyObject *item = decoded_type->tp_alloc(decoded_type, 0);
    if (item == NULL) return NULL;
    for (int i = 0; i < DECODED_FIELDS; i++) {
        PyObject *slot = decoded_slots[i];
        if (Py_TYPE(slot)->tp_descr_set(slot, item, values[i]) < 0) {
            Py_DECREF(item);
            return NULL;
        }
    }
    return item;
}

static PyObject *native_set_decoded_type(PyObject *module, PyObject *args) {
    PyObject *type, *slots;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyTuple_Type, &slots))
        return NULL;
    if (PyTuple_GET_SIZE(slots) != DECODED_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "DecodedLog must have 11 fields");
        return NULL;
    }
    for (int i = 0; i < DECODED_FIELDS; i++) {
        PyObject *slot = PyTuple_GET_ITEM(slots, i);
        if (Py_TYPE(slot)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "a DecodedLog field is not a slot");
            return NULL;
        }
        Py_INCREF(slot);
        Py_XSETREF(decoded_slots[i], slot);
    }
    Py_INCREF(type);
    Py_XSETREF(decoded_type, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

/* decode(chain_id, logs, dispatch, contracts, contract_miss, skip, caches) -> (out, done)
 *
 * As LogDecoder._decode over logs[:done]; Python decodes logs[done:] (done < len(logs):
 * the log at ``done`` is one this loop does not take). dispatch: topic0 -> (contract,
 * event, ops or None, words, python_decode, topic_count); caches: (topic_cache, topic_miss,
 * word_cache, word_miss, bool_topics, limit); skip(log) counts an unknown event. */
static PyObject *native_decode(PyObject *module, PyObject *args) {
    PyObject *chain_id, *logs, *dispatch, *contracts, *contract_miss, *skip, *cache_args;
    Caches caches;
    if (!PyArg_ParseTuple(args, "OO!O!O!OOO!", &chain_id, &PyList_Type, &logs, &PyDict_Type,
                          &dispatch, &PyDict_Type, &contracts, &contract_miss, &skip,
                          &PyTuple_Type, &cache_args))
        return NULL;
    if (decoded_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_decoded_type() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(cache_args, "O!OO!OO!n", &PyDict_Type, &caches.topic_cache,
                          &caches.topic_miss, &PyDict_Type, &caches.word_cache,
                          &caches.word_miss, &PyDict_Type, &caches.bool_topics, &caches.limit))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(logs), i = 0;
    PyObject *out = PyList_New(0);
    PyObject *block_number = NULL, *last_block = NULL, *last_hash = NULL, *last_tx = NULL;
    PyObject *values[DECODED_FIELDS] = {NULL};
    if (out == NULL) return NULL;
    for (; i < count; i++) {
        PyObject *log = PyList_GET_ITEM(logs, i);
        if (!PyDict_CheckExact(log)) break;
        /* Python reads all eight fields first: a log missing one is an error, known or not */
        PyObject *topics = field(log, KEY_TOPICS), *data = field(log, KEY_DATA);
        PyObject *address = field(log, KEY_ADDRESS), *block_hex = field(log, KEY_BLOCK_NUMBER);
        PyObject *block_hash = field(log, KEY_BLOCK_HASH), *tx = field(log, KEY_TX_HASH);
        PyObject *tx_index = field(log, KEY_TX_INDEX), *log_index = field(log, KEY_LOG_INDEX);
        if (!topics || !data || !address || !block_hex || !block_hash || !tx || !tx_index ||
            !log_index || !PyList_CheckExact(topics))
            break;
        PyObject *target = NULL;
        if (PyList_GET_SIZE(topics) > 0) {
            PyObject *topic0 = PyList_GET_ITEM(topics, 0);
            if (!PyUnicode_CheckExact(topic0)) break;
            target = PyDict_GetItemWithError(dispatch, topic0);
            if (target == NULL && PyErr_Occurred()) break;
        }
        if (target == NULL) {
            PyObject *skipped = PyObject_CallOneArg(skip, log);
            if (skipped == NULL) break;
            Py_DECREF(skipped);
            continue;
        }
        if (!same(block_hex, last_block)) {
            Py_XSETREF(block_number, quantity(block_hex));
            if (block_number == NULL) break;
            last_block = block_hex;
        }
        unsigned char checked[32]; /* the hashes are only checked: the log's str is kept */
        if (!same(block_hash, last_hash)) {
            if (!hex_word(block_hash, checked)) break;
            last_hash = block_hash;
        }
        if (!same(tx, last_tx)) {
            if (!hex_word(tx, checked)) break;
            last_tx = tx;
        }
        PyObject *contract = PyTuple_GET_ITEM(target, 0), *event = PyTuple_GET_ITEM(target, 1);
        PyObject *ops = PyTuple_GET_ITEM(target, 2);
        Py_ssize_t words = PyLong_AsSsize_t(PyTuple_GET_ITEM(target, 3));
        PyObject *decoded;
        if (ops == Py_None) {
            decoded = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(target, 4), topics, data,
                                                   NULL);
        } else {
            Py_ssize_t topic_count = PyLong_AsSsize_t(PyTuple_GET_ITEM(target, 5));
            if (PyList_GET_SIZE(topics) != topic_count) break;
            decoded = decode_args(ops, words, topics, data, &caches);
        }
        if (decoded == NULL) break;
        values[9] = decoded;
        values[0] = Py_NewRef(chain_id);
        values[1] = Py_NewRef(block_number);
        values[2] = Py_NewRef(block_hash);
        values[3] = Py_NewRef(tx);
        values[7] = Py_NewRef(contract);
        values[8] = Py_NewRef(event);
        values[10] = Py_NewRef(field(log, KEY_REMOVED) == Py_True ? Py_True : Py_False);
        PyObject *item = NULL;
        if ((values[4] = quantity(tx_index)) && (values[5] = quantity(log_index)) &&
            (values[6] = cached(contracts, contract_miss, address)))
            item = new_decoded(values);
        for (int k = 0; k < DECODED_FIELDS; k++) Py_CLEAR(values[k]);
        if (item == NULL) break;
        int appended = PyList_Append(out, item);
        Py_DECREF(item);
        if (appended < 0) break;
    }
    Py_XDECREF(block_number);
    if (i < count && !fall_back()) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(Nn)", out, i);
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"keccak256", native_keccak256, METH_O, "keccak256(data) -> 32 bytes (Ethereum's)."},
    {"checksum", native_checksum, METH_O,
     "checksum(40 hex digits) -> '0x' + EIP-55 mixed case (abiwords.checksum's twin)."},
    {"raw_rows", native_raw_rows, METH_VARARGS,
     "raw_rows(chain_id, logs) -> (packed, blocks) or None (writer._raw_rows' twin)."},
    {"unpack", native_unpack, METH_VARARGS,
     "unpack(data, kinds) -> rows (copyrows.unpack_python's twin)."},
    {"decode", native_decode, METH_VARARGS,
     "decode(chain_id, logs, dispatch, contracts, contract_miss, skip, caches) -> "
     "(decoded, done) (LogDecoder._decode's twin over logs[:done])."},
    {"set_decoded_type", native_set_decoded_type, METH_VARARGS,
     "set_decoded_type(DecodedLog, member descriptors in field order)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "indexer._native",
    "The indexer's hot loops in C; see indexer/native.py.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    init_hex();
    PyObject **keys[] = {&KEY_TOPICS,  &KEY_DATA,     &KEY_ADDRESS,   &KEY_BLOCK_NUMBER,
                         &KEY_BLOCK_HASH, &KEY_TX_HASH, &KEY_TX_INDEX, &KEY_LOG_INDEX,
                         &KEY_REMOVED};
    const char *names[] = {"topics",          "data",           "address",
                           "blockNumber",     "blockHash",      "transactionHash",
                           "transactionIndex", "logIndex",      "removed"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        *keys[k] = PyUnicode_InternFromString(names[k]);
        if (*keys[k] == NULL) return NULL;
    }
    return PyModule_Create(&module_def);
}
