//! ADT^A40 (merge patient, patient identifier list): each PID (the surviving patient) with the
//! MRG after it (MRG-1, the prior patient's identifier list), both under the source's assigning
//! authority. The PID also updates the survivor's demographics like an A08.

use schemas::PatientIdentity;

use super::{patient, MapError, Mapped, Mapper};

/// A merge of two of one source's patients: the prior's history moves to the survivor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub survivor: PatientIdentity,
    pub prior: PatientIdentity,
}

pub fn map(m: &Mapper) -> Result<Mapped, MapError> {
    let mut mapped = Mapped::default();
    let segments = &m.msg.segments;
    for (i, pid) in segments.iter().enumerate().filter(|(_, s)| s.name == "PID") {
        let survivor = patient::Patient::read(m, pid)?;
        // The MRG of this PID's group: after it, before the next PID.
        let mrg = segments[i + 1..]
            .iter()
            .take_while(|s| s.name != "PID")
            .find(|s| s.name == "MRG")
            .ok_or_else(|| {
                MapError::Invalid("ADT^A40 (merge): each PID needs an MRG segment".into())
            })?;
        let prior = patient::local_mrn(m, mrg, 1).ok_or_else(|| {
            MapError::Invalid(
                "MRG-1 has no identifier under the source's assigning authority nor one typed MR"
                    .into(),
            )
        })?;
        if prior == survivor.identity.mrn {
            return Err(MapError::Invalid(
                "MRG-1 names the same patient as PID-3".into(),
            ));
        }
        mapped.records.push(survivor.record(m));
        mapped.merges.push(Merge {
            prior: PatientIdentity {
                assigning_authority: m.ctx.assigning_authority.clone(),
                mrn: prior,
            },
            survivor: survivor.identity,
        });
    }
    if mapped.merges.is_empty() {
        return Err(MapError::Invalid("PID is required".into()));
    }
    Ok(mapped)
}
