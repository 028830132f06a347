// SPDX-License-Identifier: Apache-2.0
// bench/probes/getattro_probe.c: would a tp_getattro fast path beat a getset on CPython 3.11?
//
// A scratch extension behind bench/README.md (targets 1 and 3); not part of tether and not
// built by CMake. Two identical types with a getset `x` (returns a held object), a getset
// `value` (an int64) and a METH_NOARGS method `m`. `Fast` adds a tp_getattro that sends an
// interned field name straight to its getter while the type is unmodified. Build and run:
//     cc -O3 -shared -fPIC $(python3-config --includes) getattro_probe.c
//        -o getattro_probe$(python3-config --extension-suffix)      (one command line)
//     PYTHONPATH=. python run_getattro_probe.py
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    PyObject *x;
    int64_t value;
} Probe;

static PyObject *get_x(PyObject *self, void *closure) {
    (void) closure;
    PyObject *x = ((Probe *) self)->x;
    Py_INCREF(x);
    return x;
}
static PyObject *get_value(PyObject *self, void *closure) {
    (void) closure;
    return PyLong_FromLongLong(((Probe *) self)->value);
}
static PyObject *method_m(PyObject *self, PyObject *unused) {
    (void) unused;
    Py_INCREF(self);
    return self;
}
static int probe_init(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void) kwargs;
    PyObject *x;
    long long v;
    if (!PyArg_ParseTuple(args, "OL", &x, &v))
        return -1;
    Py_INCREF(x);
    ((Probe *) self)->x = x;
    ((Probe *) self)->value = v;
    return 0;
}
static void probe_dealloc(PyObject *self) {
    Py_XDECREF(((Probe *) self)->x);
    Py_TYPE(self)->tp_free(self);
}

static PyGetSetDef probe_getset[] = {
    {"x", get_x, NULL, NULL, NULL}, {"value", get_value, NULL, NULL, NULL}, {NULL}};
static PyMethodDef probe_methods[] = {{"m", method_m, METH_NOARGS, NULL}, {NULL}};

static PyObject *fast_getattro(PyObject *self, PyObject *name);

#define PROBE_TYPE(NAME, GETATTRO)                                                           \
    {PyVarObject_HEAD_INIT(NULL, 0).tp_name = NAME, .tp_basicsize = sizeof(Probe),           \
     .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, .tp_getset = probe_getset,        \
     .tp_methods = probe_methods, .tp_init = probe_init, .tp_new = PyType_GenericNew,        \
     .tp_dealloc = probe_dealloc, .tp_getattro = GETATTRO}

static PyTypeObject GetsetType = PROBE_TYPE("getattro_probe.Getset", NULL);
static PyTypeObject FastType = PROBE_TYPE("getattro_probe.Fast", fast_getattro);

static PyObject *s_x, *s_value;
static unsigned int checked_tag; // FastType's version tag when its MRO lookups were checked

/// True while looking `x` and `value` up on `tp` still finds our own getsets. The version tag
/// changes whenever the type or a base is modified, which sends us through the check again.
static int still_ours(PyTypeObject *tp) {
    if (tp->tp_version_tag != 0 && tp->tp_version_tag == checked_tag)
        return 1;
    PyObject *dx = _PyType_Lookup(tp, s_x), *dv = _PyType_Lookup(tp, s_value);
    int ok = dx && Py_IS_TYPE(dx, &PyGetSetDescr_Type) &&
             ((PyGetSetDescrObject *) dx)->d_getset->get == get_x && dv &&
             Py_IS_TYPE(dv, &PyGetSetDescr_Type) &&
             ((PyGetSetDescrObject *) dv)->d_getset->get == get_value;
    checked_tag = ok ? tp->tp_version_tag : 0;
    return ok;
}

static PyObject *fast_getattro(PyObject *self, PyObject *name) {
    PyTypeObject *tp = Py_TYPE(self);
    if (tp == &FastType && (name == s_x || name == s_value) && still_ours(tp))
        return name == s_x ? get_x(self, NULL) : get_value(self, NULL);
    return PyObject_GenericGetAttr(self, name);
}

static struct PyModuleDef probe_module = {PyModuleDef_HEAD_INIT, .m_name = "getattro_probe",
                                          .m_size = -1};

PyMODINIT_FUNC PyInit_getattro_probe(void) {
    s_x = PyUnicode_InternFromString("x");
    s_value = PyUnicode_InternFromString("value");
    if (!s_x || !s_value || PyType_Ready(&GetsetType) < 0 || PyType_Ready(&FastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&probe_module);
    if (!m)
        return NULL;
    Py_INCREF(&GetsetType);
    Py_INCREF(&FastType);
    PyModule_AddObject(m, "Getset", (PyObject *) &GetsetType);
    PyModule_AddObject(m, "Fast", (PyObject *) &FastType);
    return m;
}
