/* The worker's hottest byte work in C: the clean-JSON scan of a visit's book, and the analytics record's writer.
 *
 * Both are shortcuts with a model in Python beside them (schemas/text.py, schemas/straight_writer.py with
 * domain/deidentify.py): tests hold each to its model, and whenever a value is not what the shortcut was
 * written for it answers "not clean" or None, and the model decides.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CODE_POINTS 0x110000

/* json_is_clean(data, flagged): whether UTF-8 JSON text holds no escaped control character (\u000X, \u001X,
 * \b, \f), no raw C0 control, no invalid UTF-8 and no code point whose bit is set in flagged (a bitmap of
 * CODE_POINTS bits: every character that can make a text other than NFC). */
static PyObject *json_is_clean(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "json_is_clean(data: bytes, flagged: bytes)");
        return NULL;
    }
    if (PyBytes_GET_SIZE(args[1]) != CODE_POINTS / 8) {
        PyErr_SetString(PyExc_ValueError, "flagged must hold one bit for each of the 0x110000 code points");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *end = p + PyBytes_GET_SIZE(args[0]);
    const unsigned char *flagged = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (p < end) {
        if (end - p >= 8) {  /* eight plain ASCII bytes at once: none high, below 0x20 or a backslash */
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t slash = w ^ (ones * '\\');
            if (((w | ((w - ones * 0x20) & ~w) | ((slash - ones) & ~slash)) & highs) == 0) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') Py_RETURN_FALSE;
            if (c == '\\' && p + 1 < end) {
                unsigned char d = p[1];
                if (d == 'b' || d == 'f') Py_RETURN_FALSE;
                if (d == 'u' && p + 4 < end && p[2] == '0' && p[3] == '0' && (p[4] == '0' || p[4] == '1'))
                    Py_RETURN_FALSE;
            }
            p++;
            continue;
        }
        uint32_t cp;
        Py_ssize_t more;
        if (c >= 0xC2 && c <= 0xDF) { cp = c & 0x1F; more = 1; }
        else if (c >= 0xE0 && c <= 0xEF) { cp = c & 0x0F; more = 2; }
        else if (c >= 0xF0 && c <= 0xF4) { cp = c & 0x07; more = 3; }
        else Py_RETURN_FALSE;
        if (end - p <= more) Py_RETURN_FALSE;
        for (Py_ssize_t i = 1; i <= more; i++) {
            if ((p[i] & 0xC0) != 0x80) Py_RETURN_FALSE;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (more == 3 && (cp < 0x10000 || cp >= CODE_POINTS)))
            Py_RETURN_FALSE;
        if (flagged[cp >> 3] & (1u << (cp & 7))) Py_RETURN_FALSE;
        p += more + 1;
    }
    Py_RETURN_TRUE;
}

/* A growing byte buffer; every append reports failure as 0 with a Python exception set. */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
    char inline_data[1024];
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 1;
    Py_ssize_t capacity = (b->size + more) * 2;
    char *grown = b->data == b->inline_data ? PyMem_Malloc(capacity) : PyMem_Realloc(b->data, capacity);
    if (grown == NULL) { PyErr_NoMemory(); return 0; }
    if (b->data == b->inline_data) memcpy(grown, b->inline_data, b->size);
    b->data = grown;
    b->capacity = capacity;
    return 1;
}

static int put_bytes(Buffer *b, const char *bytes, Py_ssize_t n) {
    if (!reserve(b, n)) return 0;
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
    return 1;
}

static int put_long(Buffer *b, long long n) {  /* Avro int or long: zig-zag, 7 bits a byte, lowest first */
    unsigned long long z = ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63);
    if (!reserve(b, 10)) return 0;
    while (z > 0x7F) { b->data[b->size++] = (char)((z & 0x7F) | 0x80); z >>= 7; }
    b->data[b->size++] = (char)z;
    return 1;
}

/* Result of writing one value: written, not what the shortcut writes (the model decides), or a Python error. */
enum { WRITTEN = 1, NOT_MINE = 0, FAILED = -1 };

static int put_string(Buffer *b, PyObject *value) {
    if (value == NULL || !PyUnicode_Check(value)) return NOT_MINE;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
    if (utf8 == NULL) { PyErr_Clear(); return NOT_MINE; }  /* a lone surrogate: the model raises for it */
    return put_long(b, n) && put_bytes(b, utf8, n) ? WRITTEN : FAILED;
}

static int put_int(Buffer *b, PyObject *value, int is_long) {
    if (value == NULL || !PyLong_Check(value)) return NOT_MINE;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (n == -1 && PyErr_Occurred())) { PyErr_Clear(); return NOT_MINE; }
    if (!is_long && (n < INT32_MIN || n > INT32_MAX)) return NOT_MINE;
    return put_long(b, n) ? WRITTEN : FAILED;
}

static int put_optional_int(Buffer *b, PyObject *value) {  /* union ["null", "int"] */
    if (value == Py_None) return put_bytes(b, "\x00", 1) ? WRITTEN : FAILED;
    if (!put_bytes(b, "\x02", 1)) return FAILED;
    return put_int(b, value, 0);
}

static int put_string_array(Buffer *b, PyObject *items) {
    if (items == NULL || !PyList_Check(items)) return NOT_MINE;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n > 0 && !put_long(b, n)) return FAILED;
    for (Py_ssize_t i = 0; i < n; i++) {
        int done = put_string(b, PyList_GET_ITEM(items, i));
        if (done != WRITTEN) return done;
    }
    return put_bytes(b, "\x00", 1) ? WRITTEN : FAILED;
}

static int put_drug_codes(Buffer *b, PyObject *medicines) {  /* [m["drug_code"] for m in medicines] */
    if (medicines == NULL || !PyList_Check(medicines)) return NOT_MINE;
    Py_ssize_t n = PyList_GET_SIZE(medicines);
    if (n > 0 && !put_long(b, n)) return FAILED;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *medicine = PyList_GET_ITEM(medicines, i);
        if (!PyDict_CheckExact(medicine)) return NOT_MINE;
        int done = put_string(b, PyDict_GetItemString(medicine, "drug_code"));
        if (done != WRITTEN) return done;
    }
    return put_bytes(b, "\x00", 1) ? WRITTEN : FAILED;
}

static PyObject *SCALEB;  /* "scaleb", interned */

/* A decimal of scale 2 as Avro bytes: its unscaled integer, big-endian two's complement in the fewest bytes. */
static int put_decimal(Buffer *b, PyObject *value) {
    if (value == NULL || value == Py_None) return NOT_MINE;
    PyObject *two = PyLong_FromLong(2);
    if (two == NULL) return FAILED;
    PyObject *scaled = PyObject_CallMethodOneArg(value, SCALEB, two);
    Py_DECREF(two);
    if (scaled == NULL) { PyErr_Clear(); return NOT_MINE; }
    PyObject *unscaled = PyNumber_Long(scaled);
    if (unscaled == NULL) { Py_DECREF(scaled); PyErr_Clear(); return NOT_MINE; }
    int whole = PyObject_RichCompareBool(unscaled, scaled, Py_EQ);
    Py_DECREF(scaled);
    int overflow = 0;
    long long n = whole == 1 ? PyLong_AsLongLongAndOverflow(unscaled, &overflow) : 0;
    Py_DECREF(unscaled);
    if (whole != 1 || overflow || PyErr_Occurred()) { PyErr_Clear(); return NOT_MINE; }
    unsigned long long magnitude = n < 0 ? (unsigned long long)(-(n + 1)) + 1 : (unsigned long long)n;
    int bits = 0;
    while (bits < 64 && (magnitude >> bits)) bits++;
    int length = (bits + 8) / 8;  /* as int.to_bytes((bit_length() + 8) // 8, "big", signed=True) */
    if (!put_long(b, length) || !reserve(b, length)) return FAILED;
    for (int i = 0; i < length; i++) {
        int shift = 8 * (length - 1 - i);
        b->data[b->size + i] = (char)(shift >= 64 ? (n < 0 ? 0xFF : 0x00) : ((n >> shift) & 0xFF));
    }
    b->size += length;
    return WRITTEN;
}

/* The first `count` characters of an ASCII string as an Avro string, like value[:count]. */
static int put_prefix(Buffer *b, PyObject *value, Py_ssize_t count) {
    if (value == NULL || !PyUnicode_Check(value) || !PyUnicode_IS_ASCII(value)) return NOT_MINE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value) < count ? PyUnicode_GET_LENGTH(value) : count;
    return put_long(b, n) && put_bytes(b, (const char *)PyUnicode_DATA(value), n) ? WRITTEN : FAILED;
}

/* int(value[:4]) for a text starting with four ASCII digits. */
static int put_year(Buffer *b, PyObject *value) {
    if (value == NULL || !PyUnicode_Check(value) || !PyUnicode_IS_ASCII(value) || PyUnicode_GET_LENGTH(value) < 4)
        return NOT_MINE;
    const char *s = (const char *)PyUnicode_DATA(value);
    long year = 0;
    for (int i = 0; i < 4; i++) {
        if (s[i] < '0' || s[i] > '9') return NOT_MINE;
        year = year * 10 + (s[i] - '0');
    }
    return put_long(b, year) ? WRITTEN : FAILED;
}

/* write_deidentified(frame, record, patient, pseudonym, visit_ref): the framed analytics record of a visit, as
 * domain/deidentify.py builds it and fastavro writes it; None when a value is not what this writer knows. */
static PyObject *write_deidentified(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "write_deidentified(frame: bytes, record: dict, patient: dict, "
                                         "pseudonym: str, visit_ref: str)");
        return NULL;
    }
    PyObject *record = args[1], *patient = args[2];
    Buffer b = {.size = 0, .capacity = sizeof(b.inline_data)};
    b.data = b.inline_data;
    int done = put_bytes(&b, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])) ? WRITTEN : FAILED;
#define PUT(step) if (done == WRITTEN) done = (step)
    PUT(put_string(&b, args[3]));
    PUT(put_string(&b, args[4]));
    PUT(put_int(&b, PyDict_GetItemString(record, "version"), 1));
    PUT(put_string(&b, PyDict_GetItemString(record, "facility_code")));
    PUT(put_year(&b, PyDict_GetItemString(patient, "birth_date")));
    PUT(put_int(&b, PyDict_GetItemString(patient, "sex"), 0));
    PyObject *province = PyDict_GetItemString(patient, "province_code");
    if (province == Py_None) { PUT(put_bytes(&b, "\x00", 1) ? WRITTEN : FAILED); }
    else { PUT(put_bytes(&b, "\x02", 1) ? WRITTEN : FAILED); PUT(put_string(&b, province)); }
    PUT(put_int(&b, PyDict_GetItemString(record, "visit_type"), 0));
    PUT(put_prefix(&b, PyDict_GetItemString(record, "admitted_at"), 6));
    PUT(put_optional_int(&b, PyDict_GetItemString(record, "treatment_days")));
    PUT(put_string(&b, PyDict_GetItemString(record, "main_diagnosis_code")));
    PUT(put_string_array(&b, PyDict_GetItemString(record, "secondary_diagnosis_codes")));
    PUT(put_optional_int(&b, PyDict_GetItemString(record, "treatment_result")));
    PUT(put_drug_codes(&b, PyDict_GetItemString(record, "medicines")));
    PUT(put_decimal(&b, PyDict_GetItemString(record, "total_cost")));
    PUT(put_decimal(&b, PyDict_GetItemString(record, "insurance_paid")));
#undef PUT
    PyObject *result = NULL;
    if (done == WRITTEN) result = PyBytes_FromStringAndSize(b.data, b.size);
    else if (done == NOT_MINE) result = Py_NewRef(Py_None);
    if (b.data != b.inline_data) PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"json_is_clean", (PyCFunction)(void (*)(void))json_is_clean, METH_FASTCALL,
     "Whether UTF-8 JSON text holds no control character, escaped or raw, and no flagged code point."},
    {"write_deidentified", (PyCFunction)(void (*)(void))write_deidentified, METH_FASTCALL,
     "The framed analytics record of a visit; None when the Python writer must write it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "schemas._native",
    "The worker's hottest byte work in C, each with a model in Python that tests hold it to.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    SCALEB = PyUnicode_InternFromString("scaleb");
    if (SCALEB == NULL) return NULL;
    return PyModule_Create(&module);
}
