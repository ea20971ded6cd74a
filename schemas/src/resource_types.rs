//! FHIR resource types as the contract sorts them: what ingest requires to reference a patient
//! is what the query API serves by patient.

/// Resource types whose records belong to a patient: ingest requires them to reference one, and
/// the FHIR API searches them by patient.
pub const PATIENT_SCOPED: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Claim",
    "ClinicalImpression",
    "Composition",
    "Condition",
    "Coverage",
    "DetectedIssue",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "ImagingStudy",
    "Immunization",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "NutritionOrder",
    "Observation",
    "Procedure",
    "QuestionnaireResponse",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
];
