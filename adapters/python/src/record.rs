//! `record!`: an immutable Python class of named fields (the events and their parts), with a
//! positional constructor, a dataclass-like `repr`, `==` and `__match_args__` (so `match event: case Gap(expected,
//! received):` works on Python 3.10+).

/// Defines a frozen `#[pyclass]` with read-only attributes, `__repr__`, `__eq__` and
/// `__match_args__`. Field types must convert to Python by reference.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[pyo3::pyclass(frozen, get_all, module = "tether._native")]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        #[pyo3::pymethods]
        impl $name {
            #[new]
            #[allow(clippy::too_many_arguments)]
            fn new($($field: $ty),*) -> Self {
                Self { $($field),* }
            }

            #[classattr]
            fn __match_args__(
                py: pyo3::Python<'_>,
            ) -> pyo3::PyResult<pyo3::Bound<'_, pyo3::types::PyTuple>> {
                let names: &[&str] = &[$(stringify!($field)),*];
                pyo3::types::PyTuple::new(py, names)
            }

            #[allow(unused_variables)]
            fn __repr__(&self, py: pyo3::Python<'_>) -> pyo3::PyResult<String> {
                #[allow(unused_mut)]
                let mut parts: Vec<String> = Vec::new();
                $(
                    {
                        use pyo3::types::PyAnyMethods;
                        let value = pyo3::IntoPyObjectExt::into_bound_py_any(&self.$field, py)?;
                        parts.push(format!("{}={}", stringify!($field), value.repr()?));
                    }
                )*
                Ok(format!("{}({})", stringify!($name), parts.join(", ")))
            }

            #[allow(unused_variables)]
            fn __eq__(
                &self,
                py: pyo3::Python<'_>,
                other: &pyo3::Bound<'_, pyo3::PyAny>,
            ) -> pyo3::PyResult<bool> {
                #[allow(unused_imports)]
                use pyo3::types::PyAnyMethods;
                let Ok(other) = other.cast::<$name>() else {
                    return Ok(false);
                };
                #[allow(unused_variables)]
                let other = other.get();
                Ok(true $(
                    && pyo3::IntoPyObjectExt::into_bound_py_any(&self.$field, py)?
                        .eq(pyo3::IntoPyObjectExt::into_bound_py_any(&other.$field, py)?)?
                )*)
            }
        }
    };
}

pub(crate) use record;
